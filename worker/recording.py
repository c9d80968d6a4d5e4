"""The offline file formats: recordings (voltages in) and reconstructions (volumes out).

Both are `.npz` archives (numpy, no pickles). Volumes are indexed (P, R, C) = (planes
bottom-to-top, rows anterior-to-posterior, columns patient-right-to-left as seen from the feet);
values are relative conductivity change Δσ/σ0. See docs/recording-format.md for the key tables.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from service.contract.geometry import resolve_geometry
from service.contract.grid import resolve_grid
from service.contract.protocol import resolve_protocol
from worker import storage

RECORDING_META_KEYS = ("geometry", "protocol", "grid")
RECONSTRUCTION_META_KEYS = ("method",)
_T = TypeVar("_T")
_KINDS = {"fiu": "real numbers", "iu": "integers", "b": "booleans"}


class RecordingError(ValueError):
    """A recording or reconstruction file (or object) is malformed; the message names the key."""


def _array(key: str, value: Any, ndim: int, kinds: str) -> np.ndarray:
    """`value` as an array of `ndim` dimensions whose dtype kind is one of `kinds`."""
    arr = np.asarray(value)
    if arr.ndim != ndim:
        raise RecordingError(f"{key}: expected {ndim} dimensions, got shape {arr.shape}")
    if arr.dtype.kind not in kinds:
        raise RecordingError(f"{key}: expected {_KINDS[kinds]}, got dtype {arr.dtype}")
    if arr.size == 0:
        raise RecordingError(f"{key}: is empty (shape {arr.shape})")
    return arr


def _floats(key: str, value: Any, ndim: int, dtype: type = np.float64) -> np.ndarray:
    """A finite real array of `ndim` dimensions, cast to `dtype`."""
    arr = _array(key, value, ndim, "fiu").astype(dtype, copy=False)
    if not np.all(np.isfinite(arr)):
        raise RecordingError(f"{key}: contains NaN or Inf")
    return arr


def _mask(value: Any, shape: tuple[int, ...] | None) -> np.ndarray:
    """A boolean (P, R, C) body mask with at least one voxel, of `shape` when given."""
    arr = _array("mask", value, 3, "b")
    if shape is not None and arr.shape != shape:
        raise RecordingError(f"mask: shape {arr.shape} does not match the volumes' {shape}")
    if not arr.any():
        raise RecordingError("mask: no voxel is inside the body")
    return arr


def _expect_frames(key: str, arr: np.ndarray, n_frames: int) -> None:
    if arr.shape[0] != n_frames:
        raise RecordingError(f"{key}: has {arr.shape[0]} frames, expected {n_frames}")


def _meta(value: Any, required: tuple[str, ...]) -> dict[str, Any]:
    """`value` (a mapping or a JSON string) as a JSON-serialisable dict holding `required` keys."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise RecordingError(f"meta: not valid JSON ({exc})") from None
    if not isinstance(value, Mapping):
        raise RecordingError(f"meta: expected a JSON object, got {type(value).__name__}")
    meta = dict(value)
    try:
        json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise RecordingError(f"meta: not JSON-serialisable ({exc})") from None
    missing = [k for k in required if k not in meta]
    if missing:
        raise RecordingError(f"meta: missing key(s) {', '.join(missing)}")
    return meta


def _read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """All arrays of an `.npz` archive; RecordingError when it is not one."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise RecordingError(f"{path}: not a readable .npz archive ({exc})") from None


def _require(data: Mapping[str, Any], keys: tuple[str, ...]) -> None:
    missing = [k for k in keys if k not in data]
    if missing:
        raise RecordingError(f"missing key(s) {', '.join(missing)}")


def _in_file(path: str | Path, build: Callable[[], _T]) -> _T:
    """`build()`, with the file's name put in front of any RecordingError message."""
    try:
        return build()
    except RecordingError as exc:
        raise RecordingError(f"{path}: {exc}") from None


def protocol_measurements(meta: Mapping[str, Any]) -> int:
    """M of the protocol in `meta` for its geometry's electrodes, without building a model
    (cheap: checks a recording's M before a model is built)."""
    try:
        n_electrodes = resolve_geometry(meta["geometry"]).electrodes.count
        return resolve_protocol(meta["protocol"]).build(n_electrodes).n_measurements
    except (TypeError, ValueError) as exc:
        raise RecordingError(f"meta: invalid geometry or protocol ({exc})") from None


def _write_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """Write `arrays` to exactly `path` (numpy would otherwise append `.npz`)."""
    with open(path, "wb") as fh:
        np.savez_compressed(fh, **arrays)


@dataclass(frozen=True, eq=False)
class Recording:
    """A belt recording: T voltage frames of M measurements, plus the truth when simulated.

    voltages (T, M), reference (M), frame_times (T, s, strictly increasing), meta a dict with
    geometry/protocol/grid specs that pass straight to `worker.forward.load_model`, plus
    case/snr_db/seed where known; mask (P, R, C) bool or None (the model's mask: reconstruction
    derives it), truth (T, P, R, C) Δσ/σ0 or None (needs a mask).
    """

    voltages: np.ndarray
    reference: np.ndarray
    frame_times: np.ndarray
    meta: dict[str, Any]
    mask: np.ndarray | None = None
    truth: np.ndarray | None = None

    def __post_init__(self) -> None:
        voltages = _floats("voltages", self.voltages, 2)
        n_frames, n_meas = voltages.shape
        reference = _floats("reference", self.reference, 1)
        if reference.shape != (n_meas,):
            raise RecordingError(
                f"reference: has {reference.size} measurements, voltages have {n_meas}")
        frame_times = _floats("frame_times", self.frame_times, 1)
        _expect_frames("frame_times", frame_times, n_frames)
        if np.any(np.diff(frame_times) <= 0):
            raise RecordingError("frame_times: not strictly increasing")
        mask = None if self.mask is None else _mask(self.mask, None)
        truth = None
        if self.truth is not None:
            if mask is None:
                raise RecordingError("mask: a recording with truth volumes needs their mask")
            truth = _floats("truth", self.truth, 4, np.float32)
            _expect_frames("truth", truth, n_frames)
            if truth.shape[1:] != mask.shape:
                raise RecordingError(
                    f"mask: shape {mask.shape} does not match truth volumes {truth.shape[1:]}")
        meta = _meta(self.meta, RECORDING_META_KEYS)
        try:
            grid_shape = resolve_grid(meta["grid"]).shape
        except (TypeError, ValueError) as exc:
            raise RecordingError(f"meta.grid: invalid ({exc})") from None
        if mask is not None and grid_shape != mask.shape:
            raise RecordingError(f"meta.grid: {grid_shape} does not match mask {mask.shape}")
        for name, value in (("voltages", voltages), ("reference", reference),
                            ("frame_times", frame_times), ("mask", mask), ("truth", truth),
                            ("meta", meta)):
            object.__setattr__(self, name, value)

    @property
    def n_frames(self) -> int:
        return int(self.voltages.shape[0])

    @property
    def n_measurements(self) -> int:
        return int(self.voltages.shape[1])

    def save(self, path: str | Path) -> None:
        """Write the recording to `path` (compressed .npz; `meta` as a JSON string)."""
        arrays = {"voltages": self.voltages, "reference": self.reference,
                  "frame_times": self.frame_times, "meta": np.array(json.dumps(self.meta))}
        if self.mask is not None:
            arrays["mask"] = self.mask
        if self.truth is not None:
            arrays["truth"] = self.truth
        _write_npz(path, arrays)

    @classmethod
    def from_arrays(cls, data: Mapping[str, Any]) -> Recording:
        """A validated recording from a mapping of the file's keys (as read from an archive)."""
        _require(data, ("voltages", "reference", "frame_times", "meta"))
        return cls(voltages=data["voltages"], reference=data["reference"],
                   frame_times=data["frame_times"], mask=data.get("mask"), meta=data["meta"],
                   truth=data.get("truth"))

    @classmethod
    def load(cls, path: str | Path) -> Recording:
        """Read and validate a recording; RecordingError names the file and the key."""
        data = _read_npz(path)
        return _in_file(path, lambda: cls.from_arrays(data))


@dataclass(frozen=True, eq=False)
class Reconstruction:
    """Reconstructed volumes of a recording: one (P, R, C) float32 volume per frame.

    volumes (T, P, R, C), seconds_per_frame (T), iterations (T, int), mask (P, R, C) bool,
    meta a dict with the method name plus, by convention, `source` (file) and `settings`.
    """

    volumes: np.ndarray
    seconds_per_frame: np.ndarray
    iterations: np.ndarray
    mask: np.ndarray
    meta: dict[str, Any]

    def __post_init__(self) -> None:
        volumes = _floats("volumes", self.volumes, 4, np.float32)
        n_frames = volumes.shape[0]
        seconds = _floats("seconds_per_frame", self.seconds_per_frame, 1)
        _expect_frames("seconds_per_frame", seconds, n_frames)
        if np.any(seconds < 0):
            raise RecordingError("seconds_per_frame: negative duration")
        iterations = _array("iterations", self.iterations, 1, "iu").astype(np.int64)
        _expect_frames("iterations", iterations, n_frames)
        if np.any(iterations < 0):
            raise RecordingError("iterations: negative count")
        mask = _mask(self.mask, volumes.shape[1:])
        meta = _meta(self.meta, RECONSTRUCTION_META_KEYS)
        for name, value in (("volumes", volumes), ("seconds_per_frame", seconds),
                            ("iterations", iterations), ("mask", mask), ("meta", meta)):
            object.__setattr__(self, name, value)

    @property
    def n_frames(self) -> int:
        return int(self.volumes.shape[0])

    def save(self, path: str | Path) -> None:
        """Write the reconstruction to `path` (compressed .npz; `meta` as a JSON string)."""
        _write_npz(path, {"volumes": self.volumes, "seconds_per_frame": self.seconds_per_frame,
                          "iterations": self.iterations, "mask": self.mask,
                          "meta": np.array(json.dumps(self.meta))})

    @classmethod
    def from_arrays(cls, data: Mapping[str, Any]) -> Reconstruction:
        """A validated reconstruction from a mapping of the file's keys."""
        _require(data, ("volumes", "seconds_per_frame", "iterations", "mask", "meta"))
        return cls(volumes=data["volumes"], seconds_per_frame=data["seconds_per_frame"],
                   iterations=data["iterations"], mask=data["mask"], meta=data["meta"])

    @classmethod
    def load(cls, path: str | Path) -> Reconstruction:
        """Read and validate a reconstruction; RecordingError names the file and the key."""
        data = _read_npz(path)
        return _in_file(path, lambda: cls.from_arrays(data))


def load_volumes(path: str | Path) -> tuple[np.ndarray, np.ndarray, str]:
    """(volumes (T, P, R, C), mask, label) from a reconstruction or a recording's truth.

    The label is the reconstruction's method name, or "truth" for a recording. A recording
    without ground truth (a real one) raises RecordingError.
    """
    data = _read_npz(path)
    if "volumes" in data:
        recon = _in_file(path, lambda: Reconstruction.from_arrays(data))
        return recon.volumes, recon.mask, str(recon.meta["method"])
    rec = _in_file(path, lambda: Recording.from_arrays(data))
    if rec.truth is None:
        raise RecordingError(f"{path}: truth: no ground truth in this recording (a real one?)")
    return rec.truth, rec.mask, "truth"


def cached_simulation(name: str, build: Callable[[], Recording]) -> Recording:
    """The simulated recording `<cache dir>/simulations/<name>.npz` (name carries its content
    key), read when it is there and valid, else built now and stored."""

    def read(stored: Path) -> Recording | None:
        try:
            return Recording.load(stored)
        except (FileNotFoundError, RecordingError):
            return None

    path = storage.cache_dir() / "simulations" / f"{name}.npz"
    return storage.read_or_build(path, read, build, Recording.save)
