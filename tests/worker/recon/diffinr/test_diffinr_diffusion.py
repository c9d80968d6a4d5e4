"""The diffusion model (seed 2, eq. 5-7, 13): schedule, training loss, training and sampling."""

from __future__ import annotations

import torch
from diffusers import UNet2DModel

from worker.recon.diffinr.diffusion import denoising_loss, fit, noise_level, sample, vp_schedule
from worker.recon.diffinr.shapes import ShapeSpec, shape_images


def test_vp_schedule_goes_from_clean_to_noise() -> None:
    schedule = vp_schedule()
    level = noise_level(schedule, torch.arange(1000))
    assert level[0] < 1e-3 and level[-1] > 0.999
    assert (level.diff() > 0).all()
    rebuilt = vp_schedule(dict(schedule.config))
    torch.testing.assert_close(rebuilt.alphas_cumprod, schedule.alphas_cumprod)


def test_noised_image_has_the_vp_variance() -> None:
    """x_t = √ᾱ x0 + √(1-ᾱ) ε keeps unit variance for unit-variance x0 (variance preserving)."""
    schedule = vp_schedule()
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 1, 64, 64, generator=g), torch.randn(4, 1, 64, 64, generator=g)
    t = torch.tensor([10, 300, 600, 900])
    x_t = schedule.add_noise(x0, eps, t)
    assert torch.allclose(x_t.var(dim=(1, 2, 3)), torch.ones(4), atol=0.1)
    corr = torch.stack([torch.corrcoef(torch.stack([x_t[i].flatten(), eps[i].flatten()]))[0, 1]
                        for i in range(4)])
    torch.testing.assert_close(corr ** 2, noise_level(schedule, t), atol=0.05, rtol=0)


def test_training_lowers_the_denoising_loss(tiny_net: UNet2DModel) -> None:
    """On held-out shape images, 150 Adam steps lower eq. 13's loss well below its start."""
    schedule = vp_schedule()
    spec = ShapeSpec(size=16)
    train = torch.from_numpy(shape_images(256, seed=0, spec=spec))
    held_out = torch.from_numpy(shape_images(128, seed=1, spec=spec))

    def held_out_loss(net: UNet2DModel) -> float:
        with torch.no_grad():
            return float(denoising_loss(net, schedule, held_out, torch.Generator().manual_seed(9)))

    before = held_out_loss(tiny_net.eval())
    net = fit(tiny_net, schedule, train, steps=150, batch=32, lr=2e-3,
              generator=torch.Generator().manual_seed(0))
    assert held_out_loss(net) < 0.6 * before


def test_sampling_is_seeded_and_bounded(tiny_net: UNet2DModel) -> None:
    schedule = vp_schedule()
    a = sample(tiny_net.eval(), schedule, 2, torch.Generator().manual_seed(0), steps=10)
    b = sample(tiny_net, schedule, 2, torch.Generator().manual_seed(0), steps=10)
    assert a.shape == (2, 1, 16, 16) and torch.equal(a, b)
    assert a.abs().max() <= 1.0 + 1e-6  # the sampler clips its x0 estimate to the data range
