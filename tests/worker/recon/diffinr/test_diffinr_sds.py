"""Score distillation (seed 2, eq. 14): the gradient is the stop-gradient residual."""

from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DModel

from worker.recon.diffinr.diffusion import noise_level, vp_schedule
from worker.recon.diffinr.sds import SDSPrior


@pytest.fixture
def prior(tiny_net: UNet2DModel) -> SDSPrior:
    return SDSPrior(tiny_net, vp_schedule(), t_range=(0.2, 0.6))


def test_gradient_is_the_weighted_residual(prior: SDSPrior) -> None:
    """∇_x L = w(t) (ε̂(x_t, t) - ε) / N, computed here from the network directly."""
    x = torch.rand(5, 1, 16, 16) * 2 - 1
    x.requires_grad_(True)
    g = torch.Generator().manual_seed(7)
    state = g.get_state()
    prior.loss(x, g).backward()

    g.set_state(state)  # replay the same t and ε
    t = torch.randint(200, 600, (5,), generator=g)
    eps = torch.randn(x.shape, generator=g)
    ab = prior.schedule.alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t = ab.sqrt() * x.detach() + (1 - ab).sqrt() * eps
    with torch.no_grad():
        expected = (1 - ab) * (prior.net(x_t, t).sample - eps) / x.numel()
    torch.testing.assert_close(x.grad, expected)


def test_time_steps_stay_in_the_sub_range(prior: SDSPrior) -> None:
    t = prior.sample_times(10_000, torch.Generator().manual_seed(0))
    assert t.min() == 200 and t.max() == 599


def test_other_sizes_are_resized(prior: SDSPrior) -> None:
    """A 40x40 slice is resampled to 16x16 inside; its gradient has the slice's own size."""
    x = torch.zeros(2, 1, 40, 40, requires_grad=True)
    prior.loss(x + 0.1, torch.Generator().manual_seed(0)).backward()
    assert x.grad is not None and x.grad.shape == (2, 1, 40, 40)
    assert x.grad.abs().sum() > 0


def test_normalise_maps_the_range_to_the_prior_range() -> None:
    x = torch.tensor([[-0.5, 0.0], [0.5, 1.5]], requires_grad=True)
    y = SDSPrior.normalise(x)
    torch.testing.assert_close(y.detach(), torch.tensor([[-1.0, -0.5], [0.0, 1.0]]))
    y.sum().backward()  # the map is affine with a fixed range: equal gradient everywhere
    torch.testing.assert_close(x.grad, torch.full((2, 2), 1.0))
    torch.testing.assert_close(SDSPrior.normalise(x.detach(), lo=-1.0, hi=3.0)[0, 0],
                               torch.tensor(-0.75))


def test_bad_time_range_is_refused(tiny_net: UNet2DModel) -> None:
    with pytest.raises(ValueError, match="t_range"):
        SDSPrior(tiny_net, vp_schedule(), t_range=(0.6, 0.2))


def test_weight_is_the_noise_variance(prior: SDSPrior) -> None:
    """w(t) = 1 - ᾱ_t: residual at t is (1 - ᾱ_t) times the raw ε̂ - ε."""
    x, eps, t = torch.zeros(1, 1, 16, 16), torch.randn(1, 1, 16, 16), torch.tensor([400])
    with torch.no_grad():
        raw = prior.net(prior.schedule.add_noise(x, eps, t), t).sample - eps
    torch.testing.assert_close(prior.residual(x, t, eps), noise_level(prior.schedule, t) * raw)
