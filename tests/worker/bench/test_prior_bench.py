"""The shipped diffusion prior: SDS alone pulls blurred, noisy held-out shapes toward the clean
ones, which an untrained network of the same shape does not."""

from __future__ import annotations

import torch

from worker.bench.prior import degraded_pairs, quality, sds_descent
from worker.recon.diffinr.diffusion import vp_schedule
from worker.recon.diffinr.score_net import score_net
from worker.recon.diffinr.sds import SDSPrior


def test_shipped_prior_metadata() -> None:
    prior = SDSPrior.load_default()
    assert prior.resolution == 32
    assert prior.schedule.config.num_train_timesteps == 1000


def test_sds_pulls_degraded_shapes_toward_the_clean_ones() -> None:
    clean, degraded = degraded_pairs(16)
    start = quality(clean, degraded)
    trained = quality(clean, sds_descent(SDSPrior.load_default(), degraded))
    torch.manual_seed(0)
    untrained = quality(clean, sds_descent(SDSPrior(score_net(), vp_schedule()), degraded))
    assert trained["ssim"] > start["ssim"] + 0.05
    assert trained["ssim"] > untrained["ssim"] + 0.05
