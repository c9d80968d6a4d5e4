"""The one interface every reconstruction method plugs into, and the registry of methods.

Data convention (D2IP eq. 1): a method receives normalised voltage changes
    Δv = (v - v_ref) / |v_ref|
against the session's measured reference v_ref, and returns the relative conductivity change
Δσ/σ0 on the model's grid, (P, R, C), zero outside the mask.

- `Method.streaming(model)` gives a per-session `StreamingReconstructor`: push one frame, get
  one `FrameResult`; `state_dict()` / `load_state_dict()` capture and restore its whole state,
  so a restored object continues exactly as the original would have (worker checkpoints).
- `reconstruct_recording` runs a streaming reconstructor over a whole recording (offline).
- `register` / `get_method` / `available_methods` form the registry the CLI, the benchmarks
  and the worker share.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from worker.forward.model import ForwardModel


@dataclass(frozen=True)
class FrameResult:
    """One reconstructed frame and its diagnostics."""

    volume: np.ndarray  # (P, R, C) float32, Δσ/σ0, zero outside the mask
    iterations: int
    loss: float
    milliseconds: float


class StreamingReconstructor(ABC):
    """Per-session state of one method on one forward model."""

    method: str

    def __init__(self, model: ForwardModel) -> None:
        self.model = model

    @abstractmethod
    def push(self, dv: np.ndarray) -> FrameResult:
        """Reconstruct the next frame from its normalised voltage change (M,)."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: picklable (numpy arrays, numbers, tensors)."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state produced by `state_dict` (possibly in another process)."""

    def timed(self, fn: Callable[[], tuple[np.ndarray, int, float]]) -> FrameResult:
        """Run fn() -> (V masked values, iterations, loss) and wrap it as a FrameResult."""
        t0 = time.perf_counter()
        values, iterations, loss = fn()
        volume = self.model.to_volume(np.asarray(values, dtype=np.float32))
        return FrameResult(volume=volume, iterations=int(iterations), loss=float(loss),
                           milliseconds=1e3 * (time.perf_counter() - t0))


Factory = Callable[..., StreamingReconstructor]
_REGISTRY: dict[str, Factory] = {}


def register(name: str) -> Callable[[Factory], Factory]:
    """Class decorator: make a StreamingReconstructor available by name."""

    def deco(factory: Factory) -> Factory:
        _REGISTRY[name] = factory
        return factory

    return deco


def _load_builtin() -> None:
    """Import the modules that register the built-in methods."""
    import importlib

    for module in ("worker.recon.tikhonov", "worker.recon.tv", "worker.recon.rsip",
                   "worker.recon.d2ip.method"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:  # a method whose module is not written yet
            if err.name != module:
                raise


def available_methods() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def get_method(name: str) -> Factory:
    _load_builtin()
    if name not in _REGISTRY:
        raise ValueError(f"method: unknown method {name!r}; available: "
                         f"{', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def normalise(voltages: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Δv = (v - v_ref)/|v_ref| (D2IP eq. 1, normalisation of [30]); rows are frames."""
    return (np.asarray(voltages, dtype=float) - reference) / np.abs(reference)


def reconstruct_recording(recon: StreamingReconstructor, voltages: np.ndarray,
                          reference: np.ndarray, progress: Iterable[int] | None = None
                          ) -> tuple[np.ndarray, list[FrameResult]]:
    """Offline: reconstruct T frames; returns volumes (T, P, R, C) and per-frame results."""
    dv = normalise(voltages, reference)
    results = []
    for t in progress if progress is not None else range(dv.shape[0]):
        results.append(recon.push(dv[t]))
    return np.stack([r.volume for r in results]), results
