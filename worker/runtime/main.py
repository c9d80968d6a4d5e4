"""Entry point of `eitmon worker`: settings, logging, signals, run."""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import NoReturn

from pydantic import ValidationError

from service.contract.errors import describe_error
from worker.runtime.config import WorkerConfig

log = logging.getLogger("eitmon.worker")


def main() -> int:
    """Run a worker until SIGTERM/SIGINT; the exit status."""
    try:
        cfg = WorkerConfig()
    except (ValidationError, ValueError) as e:
        print(f"eitmon worker: {describe_error(e)}", file=sys.stderr)
        return 2
    logging.basicConfig(level=cfg.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if cfg.torch_threads:
        import torch  # the worker may import torch; the API never does

        torch.set_num_threads(cfg.torch_threads)
    from worker.runtime.loop import Worker

    try:
        worker = Worker(cfg)
    except RuntimeError as e:  # no reconstruction method at all
        print(f"eitmon worker: {e}", file=sys.stderr)
        return 2
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: worker.stop())
    return worker.run()


def run() -> NoReturn:
    """`main()`, then end the process at once. Every session is checkpointed and released by
    then; skipping the interpreter's teardown avoids a native abort at exit ("terminate called
    without an active exception", SIGABRT, seen in about one stop in three with torch) that
    would turn a graceful stop's status 0 into -6."""
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
