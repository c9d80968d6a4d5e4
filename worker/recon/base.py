"""The one interface every reconstruction method plugs into, and the registry of methods.

Data convention (D2IP eq. 1): a method receives normalised voltage changes
    Δv = (v - v_ref) / |v_ref|   (divisor floored, see `normalise`)
against the session's measured reference v_ref, and returns the relative conductivity change
Δσ/σ0 on the model's grid, (P, R, C), zero outside the mask.

- `get_method(name)(model, **options)` gives a per-session `StreamingReconstructor`: push one
  frame, get one `FrameResult`; `push_many` takes a batch (methods that can, such as Tikhonov,
  do it in one product); `state_dict()` / `load_state_dict()` capture and restore its whole
  state, so a restored object continues exactly as the original would have (worker
  checkpoints); `settings` names the parameters it resolved (for the reconstruction's meta);
  `background_step()` does one unit of the method's work between frames (`d2ip-live`'s
  fine-tuning; the others have none), which the worker's compute thread runs when no frame
  waits.
- `on_warmup(step, done, total)`, when set, hears how far a long warm start inside `push` got
  (D2IP's UPWS; the worker shows it to the viewers): a plain callable, None by default.
- `reconstruct_recording` runs a streaming reconstructor over a whole recording (offline),
  with a progress bar.
- `register` / `get_method` / `available_methods` form the registry the CLI, the benchmarks
  and the worker share; `create` builds a method by name, passing `device` where it is taken.
"""

from __future__ import annotations

import inspect
import mmap
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from worker.forward.operator import NORMALISE_FLOOR

if TYPE_CHECKING:
    from worker.forward.model import ForwardModel


@dataclass(frozen=True)
class FrameResult:
    """One reconstructed frame and its diagnostics."""

    volume: np.ndarray  # (P, R, C) float32, Δσ/σ0, zero outside the mask
    iterations: int
    loss: float
    milliseconds: float


WarmupHook = Callable[[str, int, int], None]  # (step, done, total)


class StreamingReconstructor(ABC):
    """Per-session state of one method on one forward model."""

    method: str
    on_warmup: WarmupHook | None = None  # told the progress of a warm start inside `push`

    def __init__(self, model: ForwardModel) -> None:
        self.model = model

    @abstractmethod
    def push(self, dv: np.ndarray) -> FrameResult:
        """Reconstruct the next frame from its normalised voltage change (M,)."""

    def push_many(self, dvs: np.ndarray) -> list[FrameResult]:
        """Reconstruct T frames in order (T, M); same results as T calls of `push`."""
        return [self.push(dv) for dv in dvs]

    @property
    def settings(self) -> dict[str, Any]:
        """The method's resolved parameters (JSON-serialisable)."""
        return {}

    def background_step(self) -> bool:
        """One short unit of work between frames; False when there is none (the default)."""
        return False

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
_TIDAL: dict[str, dict[str, Any]] = {}


def register(name: str, tidal: Mapping[str, Any] | None = None
             ) -> Callable[[Factory], Factory]:
    """Class decorator: make a StreamingReconstructor available by name. `tidal`: the options
    the method takes, in place of its defaults, when it reconstructs breaths' tidal differences
    one after the other (the `breath` policy and `eitmon bench clinical`; `tidal_options`)."""

    def deco(factory: Factory) -> Factory:
        _REGISTRY[name] = factory
        if tidal:
            _TIDAL[name] = dict(tidal)
        return factory

    return deco


def _load_builtin() -> None:
    """Import the modules that register the built-in methods."""
    import importlib

    for module in ("worker.recon.tikhonov", "worker.recon.greit", "worker.recon.tv",
                   "worker.recon.rsip", "worker.recon.d2ip.variants",
                   "worker.recon.live.reconstructor", "worker.recon.educated.method",
                   "worker.recon.diffinr.methods"):
        importlib.import_module(module)


def available_methods() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def tidal_options(name: str) -> dict[str, Any]:
    """The options method `name` registered for tidal differences ({} when none)."""
    _load_builtin()
    return dict(_TIDAL.get(name, {}))


def get_method(name: str) -> Factory:
    _load_builtin()
    if name not in _REGISTRY:
        raise ValueError(f"method: unknown method {name!r}; available: "
                         f"{', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def create(name: str, model: ForwardModel, device: str | None = None,
           **options: Any) -> StreamingReconstructor:
    """`get_method(name)(model, **options)`, with `device` passed to methods that take one."""
    factory = get_method(name)
    if device is not None and "device" in inspect.signature(factory).parameters:
        options["device"] = device
    return factory(model, **options)


def normalise(voltages: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Δv = (v - v_ref) / max(|v_ref|, NORMALISE_FLOOR · rms(v_ref)); rows are frames.

    D2IP eq. 1 (the normalisation of [30]) with a floor on the divisor: a channel whose
    reference voltage nearly vanishes (a potential difference crossing zero, typical when the
    reference frame holds lungs) would otherwise be amplified a hundredfold, noise and all,
    while the Jacobian's rows are normalised by the homogeneous model's voltages. The floor
    leaves the ~95 % of channels above a tenth of the rms reference voltage untouched.
    """
    reference = np.asarray(reference, dtype=float)
    floor = NORMALISE_FLOOR * np.sqrt(np.mean(reference**2))
    return (np.asarray(voltages, dtype=float) - reference) / np.maximum(np.abs(reference), floor)


POPULATE_BYTES = 1 << 24  # outputs from 16 MB on are allocated populated (`output_array`)


def output_array(shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
    """An uninitialised array for a recording's volumes. From `POPULATE_BYTES` on (and where
    the OS has MAP_POPULATE) its pages are mapped in one call instead of one page fault per
    4 KB at the first write: 65 MB took 26-29 ms populated against 133-180 ms faulted on this
    2-core virtual machine (2026-12-06), a fifth of the time of 1000 preview frames."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape)) * dtype.itemsize
    populate = getattr(mmap, "MAP_POPULATE", None)
    if size < POPULATE_BYTES or populate is None:
        return np.empty(shape, dtype)
    buffer = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | populate)
    return np.frombuffer(buffer, dtype).reshape(shape)


def reconstruct_recording(recon: StreamingReconstructor, voltages: np.ndarray,
                          reference: np.ndarray, progress: bool = False, batch: int = 32
                          ) -> tuple[np.ndarray, list[FrameResult]]:
    """Offline: reconstruct T frames; returns volumes (T, P, R, C) and per-frame results.

    Frames go to `push_many` in batches of `batch`; `progress` shows a tqdm bar over frames.
    Each batch's volumes are copied into the one (T, P, R, C) array as they come, and the
    results hold views of it: the per-frame arrays are freed (and their memory reused by the
    next batch) instead of all T being kept and stacked at the end. A method that keeps the
    default `push_many` (one `push` per frame, e.g. the iterative INR methods at tens of seconds
    a frame) is pushed one frame at a time, so that the bar moves with every frame; the results
    are the same.
    """
    dv = normalise(voltages, reference)
    results: list[FrameResult] = []
    volumes: np.ndarray | None = None
    if type(recon).push_many is StreamingReconstructor.push_many:
        batch = 1
    with tqdm(total=len(dv), desc=recon.method, unit="frame", disable=not progress) as bar:
        for start in range(0, len(dv), batch):
            for i, r in enumerate(recon.push_many(dv[start:start + batch]), start):
                if volumes is None:
                    volumes = output_array((len(dv),) + r.volume.shape, r.volume.dtype)
                volumes[i] = r.volume
                results.append(replace(r, volume=volumes[i]))
            bar.update(min(batch, len(dv) - start))
    if volumes is None:
        raise ValueError("no frames to reconstruct")
    return volumes, results
