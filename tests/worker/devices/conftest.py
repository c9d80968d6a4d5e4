"""Fixtures: slices of the two real Goe-MF II recordings (tests/data/realdata, with their
attribution) and a coarse single-ring model for the homogeneous-model check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).resolve().parents[2] / "data" / "realdata"
NEONATE = DATA / "P04P-1016-first40.get"
CHILD = DATA / "CHB_CONV05-first40.get"
SLICE_FRAMES = 40
COARSE_RING_GEOMETRY = {"preset": "thorax-1x16", "mesh_size": 0.016}
COARSE_RING_GRID = [8, 16, 16]


@pytest.fixture(scope="session")
def coarse_ring_model(model_cache_dir: str) -> Any:
    """A coarse 16-electrode single-ring thorax with the Goe-MF II protocol (built once per
    run in the session's model cache)."""
    from worker.devices.goettingen import read_get
    from worker.forward import load_model

    return load_model(geometry=COARSE_RING_GEOMETRY, protocol=read_get(NEONATE).protocol,
                      grid=COARSE_RING_GRID)


@pytest.fixture
def coarse_ring_geometry_file(tmp_path: Path) -> Path:
    import json

    path = tmp_path / "ring.json"
    path.write_text(json.dumps(COARSE_RING_GEOMETRY))
    return path
