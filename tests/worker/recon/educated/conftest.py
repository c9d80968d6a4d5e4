"""Educated DIP tests: torch on one thread (D2IP's fixture), a tiny pretraining."""

from __future__ import annotations

from tests.worker.recon.d2ip.conftest import _one_torch_thread  # noqa: F401 (autouse fixture)
from worker.recon.educated.data import DataConfig
from worker.recon.educated.train import TrainConfig

TINY = TrainConfig(data=DataConfig(samples=6, fem_samples=0), steps=4, eval_every=2,
                   validation=0.2)
