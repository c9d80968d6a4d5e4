"""The data-scaled TV weight: its definition, its homogeneity and its smoothing rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worker.forward.model import ForwardModel
from worker.recon.finite_difference import MaskedDifference, total_variation
from worker.recon.lambda_rule import EPS_REL, KAPPA, DataScaledLambda
from worker.recon.tikhonov import tikhonov_operator


@pytest.fixture(scope="module")
def rule(coarse_model: ForwardModel) -> DataScaledLambda:
    return DataScaledLambda(MaskedDifference(coarse_model.mask))


def frame(model: ForwardModel, dv: np.ndarray) -> tuple[torch.Tensor, float]:
    """(x_T, ‖W^½Δv‖²) of one frame."""
    x_tik = torch.from_numpy(tikhonov_operator(model).matrix) @ torch.from_numpy(
        dv.astype(np.float32))
    return x_tik, float(np.sum(model.operator.whiten(dv) ** 2))


def test_tv_at_the_tikhonov_image_weighs_kappa_times_the_data(
        coarse_model: ForwardModel, rule: DataScaledLambda, healthy_dv: np.ndarray) -> None:
    x_tik, energy = frame(coarse_model, healthy_dv[1])
    weights = rule(x_tik, energy)
    g = rule.difference.apply(x_tik)
    assert weights.eps == pytest.approx(EPS_REL**2 * float(g.square().sum(0).mean()))
    tv = float(total_variation(x_tik, rule.difference, weights.eps))
    assert weights.lam * tv == pytest.approx(KAPPA * energy, rel=1e-6)


def test_homogeneous_in_the_data(coarse_model: ForwardModel, rule: DataScaledLambda,
                                 healthy_dv: np.ndarray) -> None:
    """Δv -> c Δv: λ -> c λ and the relative ε -> c² ε; no data gives λ = 0."""
    x_tik, energy = frame(coarse_model, healthy_dv[1])
    base, scaled = rule(x_tik, energy), rule(3.0 * x_tik, 9.0 * energy)
    assert scaled.lam == pytest.approx(3.0 * base.lam, rel=1e-4)
    assert scaled.eps == pytest.approx(9.0 * base.eps, rel=1e-4)
    assert rule(torch.zeros_like(x_tik), 0.0).lam == 0.0


def test_fixed_smoothing_and_kappa(coarse_model: ForwardModel, healthy_dv: np.ndarray) -> None:
    difference = MaskedDifference(coarse_model.mask)
    fixed = DataScaledLambda(difference, kappa=0.0075, eps=1e-6)
    x_tik, energy = frame(coarse_model, healthy_dv[1])
    weights = fixed(x_tik, energy)
    assert weights.eps == 1e-6
    assert weights.lam == pytest.approx(
        0.0075 * energy / float(total_variation(x_tik, difference, 1e-6)), rel=1e-6)
    with pytest.raises(ValueError, match="kappa"):
        DataScaledLambda(difference, kappa=0.0)

