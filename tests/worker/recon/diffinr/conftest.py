"""A tiny untrained noise predictor for the prior's tests (the shipped one is tested apart)."""

from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DModel

from worker.recon.diffinr.score_net import score_net


@pytest.fixture
def tiny_net() -> UNet2DModel:
    """ε̂_θ at 16 x 16 with two levels of 8 and 16 channels, seeded."""
    torch.manual_seed(0)
    return score_net(resolution=16, channels=(8, 16))
