"""Small, fast forward models shared by the forward-model tests (built once per session)."""

from __future__ import annotations

import pytest

from worker.forward import load_model
from worker.forward.model import ForwardModel


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory):
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="session")
def small_model(model_cache) -> ForwardModel:
    return load_model(geometry={"preset": "thorax-2x16", "mesh_size": 0.016}, grid=(8, 16, 16),
                      cache_dir=model_cache)
