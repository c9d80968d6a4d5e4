"""A coarse model and a short simulated breath shared by the reconstruction tests.

Everything lives in one cache folder under the session's base temp dir, so the model, the
recon operators and the simulation are built once per session for every test module that
uses the same folder (the CLI and bench tests do too).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from worker.bench.quality import Setup, recording_for
from worker.recon.base import StreamingReconstructor, normalise
from worker.recording import Recording

COARSE = {"preset": "thorax-2x16", "mesh_size": 0.016}
GRID = (8, 16, 16)
SETUP = Setup(frames=2, snr_db=50.0, geometry=COARSE, grid=list(GRID))


@pytest.fixture(scope="session")
def recon_cache(model_cache_dir: str) -> Path:
    """The session's cache folder (tests/conftest.py): models, recon operators, recordings."""
    return Path(model_cache_dir)


@pytest.fixture(scope="session")
def healthy(recon_cache: Path) -> Recording:
    """healthy-deep-breath at 50 dB, 2 frames (start and end of the inhalation), coarse."""
    return recording_for("healthy-deep-breath", SETUP)


@pytest.fixture(scope="session")
def healthy_dv(healthy: Recording) -> np.ndarray:
    return normalise(healthy.voltages, healthy.reference)


def assert_continues(make: Callable[[], StreamingReconstructor], frames: np.ndarray,
                     atol: float = 1e-6) -> None:
    """Push frames 1..3 on A, checkpointing after frame 1; a fresh B restored from that
    checkpoint and pushed frames 2..3 gives A's volumes."""
    a = make()
    first = a.push(frames[0])
    state = a.state_dict()
    rest_a = [a.push(f).volume for f in frames[1:]]
    b = make()
    b.load_state_dict(state)
    rest_b = [b.push(f).volume for f in frames[1:]]
    assert np.any(first.volume)
    for va, vb in zip(rest_a, rest_b, strict=True):
        np.testing.assert_allclose(vb, va, rtol=0, atol=atol)


@pytest.fixture
def continues() -> Callable[..., None]:
    return assert_continues


def three_frames(dv: np.ndarray) -> np.ndarray:
    """Three distinct frames from a two-frame recording: start, middle, end."""
    return np.stack([dv[0], 0.5 * (dv[0] + dv[1]), dv[1]])


@pytest.fixture
def frames3(healthy_dv: np.ndarray) -> np.ndarray:
    return three_frames(healthy_dv)


def mean_cc(recon: StreamingReconstructor, rec: Recording) -> float:
    from worker.metrics import score
    from worker.recon.base import reconstruct_recording

    volumes, _ = reconstruct_recording(recon, rec.voltages, rec.reference)
    return float(score(volumes, rec.truth, rec.mask)["mean"]["cc"])


@pytest.fixture
def cc_of() -> Callable[[StreamingReconstructor, Any], float]:
    return mean_cc
