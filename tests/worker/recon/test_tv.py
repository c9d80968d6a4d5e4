"""TV: the dual proximal map, the solver and checkpoints (the difference operator:
test_finite_difference.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worker.forward.linearisation import relinearise
from worker.forward.model import ForwardModel
from worker.recon.base import create
from worker.recon.tv import TotalVariation, prox_dual


def test_prox_dual_solves_the_radial_equation() -> None:
    """p = q - σ y with y = prox_{G/σ}(q/σ): y ∥ z, r + a r/sqrt(r² + ε) = |z|, |p_v| ≤ weight."""
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(3, 500, generator=gen, dtype=torch.float64)
    sigma, weight, eps = 0.5, 0.3, 1e-3
    p = prox_dual(q, sigma, weight, eps)
    y = (q - p) / sigma
    z = q / sigma
    r, size = y.norm(dim=0), z.norm(dim=0)
    a = weight / sigma
    torch.testing.assert_close(r + a * r / torch.sqrt(r**2 + eps), size)
    assert torch.all(p.norm(dim=0) <= weight * (1 + 1e-9))


def test_lowers_the_objective_and_stops_by_the_rule(coarse_model: ForwardModel,
                                                    healthy_dv: np.ndarray) -> None:
    recon = TotalVariation(coarse_model, max_iter=400)
    first = recon.push(healthy_dv[1])
    assert 1 < first.iterations < 400  # stopped by the relative-change tolerance
    capped = TotalVariation(coarse_model, max_iter=3).push(healthy_dv[1])
    assert capped.iterations == 3 and capped.loss > first.loss
    again = recon.push(healthy_dv[1])  # warm start from the solution: converged at once
    assert again.iterations < first.iterations
    zero = recon.push(np.zeros_like(healthy_dv[0]))
    assert not zero.volume.any() and zero.iterations == 0


def test_state_round_trip_continues(coarse_model: ForwardModel, frames3: np.ndarray,
                                    continues) -> None:
    continues(lambda: TotalVariation(coarse_model), frames3)


def test_quality_on_healthy_deep_breath(coarse_model: ForwardModel, healthy, cc_of) -> None:
    # Measured: CC 0.85 on these two frames (coarse, 50 dB); threshold as for Tikhonov, 0.7.
    assert cc_of(TotalVariation(coarse_model), healthy) > 0.7


def test_relinearised_tv_fits_a_large_change(coarse_model: ForwardModel,
                                             insulator: tuple[np.ndarray, np.ndarray]) -> None:
    """Gauss-Newton steps explain the nonlinear data of an insulator far better than the
    linear fit, whose image, read as u = log(σ/σ0), is where the first step starts."""
    _, dv = insulator
    mask = coarse_model.mask
    linear = create("tv", coarse_model).push(dv).volume[mask]
    stepped = create("tv", coarse_model, relinearise=2)
    result = stepped.push(dv)
    image = result.volume[mask]
    assert stepped.settings["relinearise"] == 2 and image.min() >= -1.0
    misfit = relinearise(coarse_model, dv, np.log1p(image)).misfit
    assert misfit < 0.5 * relinearise(coarse_model, dv, linear).misfit
    with pytest.raises(ValueError, match="relinearise"):
        create("tv", coarse_model, relinearise=-1)
