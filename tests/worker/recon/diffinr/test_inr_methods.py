"""`inr-tv` and `diff-inr` behind the registry: fitting, carrying weights, checkpoints.

`diff-inr` runs here with a test double of the diffusion prior (`ShrinkPrior`, below): its
gradient pulls every slice towards the middle of the frame's range (0 after `normalise`), so a
larger κ must bring the image closer to that value. The shipped prior is exercised by its own
tests and the benchmarks."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import Tensor

from worker.forward.linearisation import relinearise
from worker.forward.model import ForwardModel
from worker.recon.base import available_methods, create
from worker.recon.diffinr.methods import RELINEARISE

FAST = {"max_iter": 60, "window": 10, "tol": 0.01, "features": 32, "width": 32,
        "relinearise": 0}  # 1/16 the cost; the linear data term unless a test says otherwise


class ShrinkPrior:
    """A stand-in for `SDSPrior`: the same calls, an SDS-shaped loss mean(sg[x] · x)."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[int, ...], float, float]] = []

    def normalise(self, x: Tensor, lo: float | None = None, hi: float | None = None) -> Tensor:
        assert lo is not None and hi is not None
        self.calls.append((tuple(x.shape), lo, hi))
        return 2.0 * (x - lo) / (hi - lo) - 1.0

    def loss(self, slices: Tensor, generator: torch.Generator) -> Tensor:
        noise = 1.0 + 0.1 * torch.rand(slices.shape[0], 1, 1, 1, generator=generator)
        return (noise * slices.detach() * slices).mean()


def test_both_methods_are_registered() -> None:
    assert {"inr-tv", "diff-inr"} <= set(available_methods())


def test_inr_tv_fits_the_frame(coarse_model: ForwardModel, healthy_dv: np.ndarray) -> None:
    recon = create("inr-tv", coarse_model, **FAST)
    result = recon.push(healthy_dv[1])
    assert 0 < result.iterations <= 60 and np.any(result.volume)
    operator = coarse_model.operator
    values = result.volume[coarse_model.mask]
    b = operator.whiten(healthy_dv[1])
    assert np.mean((operator.apply(values) - b) ** 2) < 0.5 * np.mean(b**2)
    assert recon.settings["sigma"] > 0 and recon.settings["regulariser"] == "tv"
    zero = recon.push(np.zeros_like(healthy_dv[1]))
    assert zero.iterations == 0 and not zero.volume.any()


def test_carrying_weights_needs_fewer_iterations(coarse_model: ForwardModel,
                                                 healthy_dv: np.ndarray) -> None:
    carried = create("inr-tv", coarse_model, **{**FAST, "max_iter": 300})
    cold = carried.push(healthy_dv[1])  # the first frame starts from the initial network
    assert 20 < cold.iterations
    assert carried.push(healthy_dv[1]).iterations < cold.iterations


@pytest.mark.parametrize("method", ["inr-tv", "diff-inr"])
def test_the_fit_scales_with_the_data(coarse_model: ForwardModel, healthy_dv: np.ndarray,
                                      method: str) -> None:
    """The fit of c Δv is c times the fit of Δv, step for step (the INR's output unit s follows
    the frame): a fixed unit lets Adam's fixed steps overshoot a small change many times."""
    extra = {"prior": ShrinkPrior(), "slice_size": 16} if method == "diff-inr" else {}
    fits = [create(method, coarse_model, **FAST, **extra).push(c * healthy_dv[1])
            for c in (1.0, 0.02)]
    assert fits[0].iterations == fits[1].iterations
    scale = float(np.abs(fits[0].volume).max())
    np.testing.assert_allclose(fits[1].volume / 0.02, fits[0].volume, atol=1e-3 * scale)


def test_diff_inr_weighs_the_prior(coarse_model: ForwardModel, healthy_dv: np.ndarray) -> None:
    spread = []
    for kappa in (0.01, 100.0):
        prior = ShrinkPrior()
        recon = create("diff-inr", coarse_model, prior=prior, kappa=kappa, slices=3,
                       slice_size=16, **FAST)
        values = recon.push(healthy_dv[1]).volume[coarse_model.mask]
        shape, lo, hi = prior.calls[0]
        assert shape == (3, 1, 16, 16) and lo <= 0.0 <= hi and lo < hi
        spread.append(float(np.abs(values - 0.5 * (lo + hi)).mean()))  # from the prior's 0
    assert spread[1] < 0.8 * spread[0]


@pytest.mark.parametrize("method", ["inr-tv", "diff-inr"])
def test_state_round_trip_continues(coarse_model: ForwardModel, frames3: np.ndarray,
                                    continues: Callable[..., None], method: str) -> None:
    extra = {"prior": ShrinkPrior(), "slice_size": 16} if method == "diff-inr" else {}
    continues(lambda: create(method, coarse_model, **FAST, **extra), frames3, atol=1e-5)


def test_rejects_bad_windows(coarse_model: ForwardModel) -> None:
    with pytest.raises(ValueError, match="window"):
        create("inr-tv", coarse_model, max_iter=5, window=10)


def test_the_methods_relinearise_by_default(coarse_model: ForwardModel) -> None:
    for method in ("inr-tv", "diff-inr"):
        extra = {"prior": ShrinkPrior()} if method == "diff-inr" else {}
        assert create(method, coarse_model, **extra).settings["relinearise"] == RELINEARISE > 0


def test_relinearised_inr_fits_a_large_change(coarse_model: ForwardModel,
                                              insulator: tuple[np.ndarray, np.ndarray]) -> None:
    """After the linear fit, Gauss-Newton steps lower the nonlinear data term of an insulator;
    the image is Δσ/σ0 = e^u - 1."""
    _, dv = insulator
    mask = coarse_model.mask
    options = {**FAST, "max_iter": 200}
    linear = create("inr-tv", coarse_model, **options).push(dv)
    stepped = create("inr-tv", coarse_model, **{**options, "relinearise": 2}).push(dv)
    assert stepped.iterations > linear.iterations
    image = stepped.volume[mask]
    assert image.min() >= -1.0
    misfit = relinearise(coarse_model, dv, np.log1p(image)).misfit
    assert misfit < 0.5 * relinearise(coarse_model, dv, linear.volume[mask]).misfit
