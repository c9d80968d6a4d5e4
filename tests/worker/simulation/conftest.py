"""Coarse simulations shared by the simulation tests (built once per session)."""

from __future__ import annotations

import pytest

from worker.recording import Recording
from worker.simulation import simulate

COARSE = {"preset": "thorax-2x16", "mesh_size": 0.02}
GRID = (8, 16, 16)


@pytest.fixture(scope="session")
def healthy_clean() -> Recording:
    return simulate("healthy-deep-breath", snr_db=None, geometry=COARSE, grid=GRID)


@pytest.fixture(scope="session")
def edema_clean() -> Recording:
    return simulate("edema-left", snr_db=None, geometry=COARSE, grid=GRID, frames=6)
