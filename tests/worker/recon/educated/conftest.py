"""Educated DIP tests: torch on one thread, a tiny pretraining on the coarse model."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from worker.recon.educated.data import DataConfig
from worker.recon.educated.train import TrainConfig

TINY = TrainConfig(data=DataConfig(samples=6, fem_samples=0), steps=4, eval_every=2,
                   validation=0.2)


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
