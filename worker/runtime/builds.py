"""Cold model builds in a separate process, so that one session's build never blocks others.

A session whose forward model is neither in memory nor in the disk cache needs a cold build
(mesh, CEM factorisation and solves, Jacobian, and the singular system of the whitened
Jacobian): seconds to minutes of CPU and up to gigabytes of memory. `ModelBuilder.build` runs
it in a child process started with the `spawn` method (torch, threads and `fork` do not mix):

- the child limits its own address space (`RLIMIT_AS`, `EITMON_BUILD_MEMORY_MB`), builds with
  `worker.forward.load_model`, which writes the model to the disk cache, and reports success or
  the reason of its failure through a pipe; the worker then loads the model from the cache;
- the worker kills the child when the build runs past `EITMON_BUILD_TIMEOUT_S`, or as soon as
  `cancelled()` says so (the session was closed, its lease was lost, or the worker stops).

A build that fails (an exception, the memory limit, the time limit, a crash) raises
`BuildFailed`; the session fails at once instead of being retried (`failures.py`), because the
same spec fails the same way on any worker. A cancelled build raises `BuildCancelled`.
"""

from __future__ import annotations

import multiprocessing
import resource
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from service.contract.geometry import resolve_geometry
from service.contract.grid import resolve_grid
from service.contract.protocol import resolve_protocol
from service.contract.session import SessionConfig

POLL_S = 0.2


class BuildFailed(Exception):
    """The model of a session cannot be built (within the limits)."""


class BuildCancelled(Exception):
    """The build was stopped because the session no longer needs it."""


def model_arguments(config: SessionConfig) -> dict[str, Any]:
    """The keyword arguments of `worker.forward.load_model` for a session's model."""
    return {"geometry": config.geometry, "protocol": config.protocol, "grid": list(config.grid)}


def is_cached(arguments: dict[str, Any]) -> bool:
    """True when the model of these `load_model` arguments is in the disk cache."""
    from worker.forward import cache
    from worker.forward.model import model_spec

    specs = (resolve_geometry(arguments["geometry"]), resolve_protocol(arguments["protocol"]),
             resolve_grid(arguments["grid"]))
    return cache.path_for(model_spec(*specs)).is_file()


def _build(arguments: dict[str, Any], memory_bytes: int, report: Connection) -> None:
    """The child: limit the address space, build into the disk cache, report."""
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    try:
        from worker.forward import load_model

        model = load_model(**arguments)
        _ = model.operator.spectrum  # stored beside the model in the cache
        report.send(None)
    except MemoryError:
        report.send(f"MemoryError: the model build needs more than {memory_bytes >> 20} MiB "
                    f"(EITMON_BUILD_MEMORY_MB)")
    except Exception as e:  # the reason goes to the session's failure_reason
        report.send(f"{type(e).__name__}: {e}")
    finally:
        report.close()


class ModelBuilder:
    """Runs cold builds in a child process with a time and a memory limit."""

    def __init__(self, timeout_s: float, memory_bytes: int) -> None:
        self.timeout_s, self.memory_bytes = timeout_s, memory_bytes
        self._context = multiprocessing.get_context("spawn")

    def build(self, arguments: dict[str, Any], cancelled: Callable[[], bool]) -> None:
        """Build the model of these `load_model` arguments into the disk cache; BuildFailed
        or BuildCancelled."""
        receive, send = self._context.Pipe(duplex=False)
        child = self._context.Process(target=_build, args=(arguments, self.memory_bytes, send),
                                      name="eitmon-model-build", daemon=True)
        child.start()
        send.close()
        deadline = time.monotonic() + self.timeout_s
        try:
            while not receive.poll(POLL_S):
                if cancelled():
                    raise BuildCancelled("the session no longer needs the model")
                if time.monotonic() > deadline:
                    raise BuildFailed(f"the model build took longer than {self.timeout_s:g} s "
                                      f"(EITMON_BUILD_TIMEOUT_S)")
            try:
                failure = receive.recv()
            except EOFError:  # the child died without a word (a signal, the OOM killer)
                child.join()
                raise BuildFailed(f"the model build process ended with exit code "
                                  f"{child.exitcode}") from None
            if failure is not None:
                raise BuildFailed(failure)
        finally:
            if child.is_alive():
                child.kill()
            child.join()
            receive.close()
