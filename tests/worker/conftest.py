"""Shared fixtures for the worker tests: a small synthetic recording and reconstruction."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from worker.recording import Reconstruction, Recording

GRID = (8, 12, 10)  # P, R, C: small but larger than the 7-voxel SSIM window on two axes
N_FRAMES = 3


def body_mask(shape: tuple[int, int, int] = GRID) -> np.ndarray:
    """An elliptic cylinder standing on the grid's bottom: the 'body'."""
    _, rows, cols = shape
    r, c = np.meshgrid(np.linspace(-1, 1, rows), np.linspace(-1, 1, cols), indexing="ij")
    return np.broadcast_to(r**2 + c**2 <= 1.0, shape).copy()


def breathing_truth(shape: tuple[int, int, int] = GRID, n_frames: int = N_FRAMES) -> np.ndarray:
    """Two 'lungs' whose conductivity falls with each frame, on a smooth random background."""
    rng = np.random.default_rng(7)
    p, r, c = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    lungs = (np.exp(-((c - 0.45) ** 2 + r**2 + p**2) * 4)
             + np.exp(-((c + 0.45) ** 2 + r**2 + p**2) * 4))
    background = 0.05 * rng.standard_normal(shape)
    depth = np.linspace(0.3, 1.0, n_frames)[:, None, None, None]
    return (background - depth * lungs).astype(np.float32)


def _recording_kwargs(with_truth: bool = True) -> dict[str, Any]:
    """Keyword arguments of a valid Recording (fresh arrays every call)."""
    rng = np.random.default_rng(3)
    n_meas = 20
    return {
        "voltages": rng.standard_normal((N_FRAMES, n_meas)),
        "reference": rng.standard_normal(n_meas),
        "frame_times": np.arange(N_FRAMES) / 20.0,
        "mask": body_mask(),
        "meta": {"geometry": "thorax-2x16", "protocol": "skip4", "grid": list(GRID),
                 "case": "test", "snr_db": 40.0, "seed": 3},
        "truth": breathing_truth() if with_truth else None,
    }


def _reconstruction_of(volumes: np.ndarray, method: str = "tikhonov") -> Reconstruction:
    """A Reconstruction holding `volumes` on the test grid."""
    n_frames = len(volumes)
    return Reconstruction(volumes=volumes, seconds_per_frame=np.full(n_frames, 0.25),
                          iterations=np.ones(n_frames, dtype=int), mask=body_mask(),
                          meta={"method": method, "source": "rec.npz", "settings": {"mu": 0.01}})


@pytest.fixture
def mask() -> np.ndarray:
    return body_mask()


@pytest.fixture
def truth() -> np.ndarray:
    return breathing_truth()


@pytest.fixture
def recording_kwargs() -> dict[str, Any]:
    return _recording_kwargs()


@pytest.fixture
def recording() -> Recording:
    return Recording(**_recording_kwargs())


@pytest.fixture
def make_reconstruction() -> Callable[..., Reconstruction]:
    """Factory: make_reconstruction(volumes, method="tikhonov") on the test grid."""
    return _reconstruction_of


@pytest.fixture
def recording_path(tmp_path: Path, recording: Recording) -> Path:
    path = tmp_path / "rec.npz"
    recording.save(path)
    return path


@pytest.fixture
def real_recording_path(tmp_path: Path) -> Path:
    """A recording without truth, as from a real belt."""
    path = tmp_path / "real.npz"
    Recording(**_recording_kwargs(with_truth=False)).save(path)
    return path


@pytest.fixture
def recon_path(tmp_path: Path) -> Path:
    """A reconstruction equal to twice the truth (ERR = 1, CC = 1)."""
    path = tmp_path / "recon.npz"
    _reconstruction_of(2 * breathing_truth()).save(path)
    return path


COARSE_GEOMETRY = {"preset": "thorax-2x16", "mesh_size": 0.016}
COARSE_GRID = (8, 16, 16)


@pytest.fixture(scope="session")
def coarse_model(model_cache_dir: str):
    """A coarse thorax model (4.9k nodes, 8 x 16 x 16 grid, M = 928) built once per run in
    the session's model cache (tests/conftest.py)."""
    from worker.forward import load_model

    return load_model(geometry=COARSE_GEOMETRY, grid=COARSE_GRID)


def blob(model, value: float) -> np.ndarray:
    """(V,) u = value inside a ball of a quarter of the grid's extent, 0 elsewhere."""
    p, r, c = np.nonzero(model.mask)
    shape = np.array(model.mask.shape, dtype=float)
    centre = np.array([0.5, 0.4, 0.35]) * shape
    offsets = (np.column_stack([p, r, c]) + 0.5 - centre) / shape
    return np.where(np.sqrt((offsets**2).sum(axis=1)) < 0.25, value, 0.0)


@pytest.fixture(scope="session")
def insulator(coarse_model) -> tuple[np.ndarray, np.ndarray]:
    """(u, Δv): a ball at a tenth of the background's conductivity (u = log 0.1) in the coarse
    model and its normalised voltage change, solved by the nonlinear model itself."""
    from worker.forward.linearisation import linearise

    u = blob(coarse_model, float(np.log(0.1)))
    return u, linearise(coarse_model, u).change


@pytest.fixture
def coarse_geometry_file(tmp_path):
    """COARSE_GEOMETRY as a JSON file, for `--geometry` on the command line."""
    import json

    path = tmp_path / "coarse.json"
    path.write_text(json.dumps(COARSE_GEOMETRY))
    return path


@pytest.fixture
def fsynced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What `os.fsync` is called on from now on, "file" or "folder" per call (the calls still
    sync): the durability of `worker.storage.write_atomic`, seen by its callers."""
    calls: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(descriptor: int) -> None:
        calls.append("folder" if stat.S_ISDIR(os.fstat(descriptor).st_mode) else "file")
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    return calls
