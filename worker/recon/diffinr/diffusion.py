"""The diffusion model behind the prior (seed 2, eq. 5-7): the VP noise schedule, the
denoising score-matching loss, training and sampling.

The schedule is the discretised VP-SDE (eq. 5) of DDPM with Improved-DDPM's cosine ᾱ_t (the
seed trains with Improved-DDPM), taken from diffusers' `DDPMScheduler`: x_t = √ᾱ_t x_0 +
√(1-ᾱ_t) ε. The network predicts ε (eq. 7); we train it with the plain ε-MSE (eq. 13 with
w(t) = 1) and leave out Improved-DDPM's learned-variance term, which only serves few-step
sampling; SDS (`sds.py`) needs ε̂ alone. Sampling runs the reverse process (eq. 6) with
DDPM's ancestral steps.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.training_utils import EMAModel

TRAIN_STEPS = 1000  # discrete time steps t = 0 .. T-1


def vp_schedule(config: dict | None = None) -> DDPMScheduler:
    """The noise schedule: the cosine VP schedule of T steps, or one rebuilt from `config`."""
    if config is not None:
        return DDPMScheduler.from_config(config)
    return DDPMScheduler(num_train_timesteps=TRAIN_STEPS, beta_schedule="squaredcos_cap_v2",
                         prediction_type="epsilon", clip_sample=True)


def noise_level(schedule: DDPMScheduler, t: torch.Tensor) -> torch.Tensor:
    """1 - ᾱ_t for integer time steps `t` (the variance of x_t's noise, eq. 5)."""
    return 1.0 - schedule.alphas_cumprod.to(t.device)[t]


def denoising_loss(net: UNet2DModel, schedule: DDPMScheduler, x0: torch.Tensor,
                   generator: torch.Generator) -> torch.Tensor:
    """Eq. 13 with w(t) = 1: E_t,ε ‖ε̂_θ(x_t, t) - ε‖², t uniform over all T steps."""
    t = torch.randint(0, schedule.config.num_train_timesteps, (x0.shape[0],), generator=generator)
    eps = torch.randn(x0.shape, generator=generator)
    x_t = schedule.add_noise(x0, eps, t)
    return torch.nn.functional.mse_loss(net(x_t, t).sample, eps)


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random one of the 8 flips/quarter turns (the shapes' distribution has these symmetries)."""
    k = int(torch.randint(0, 4, (1,), generator=generator))
    x = torch.rot90(x, k, dims=(2, 3))
    return torch.flip(x, dims=(3,)) if torch.rand(1, generator=generator) < 0.5 else x


def fit(net: UNet2DModel, schedule: DDPMScheduler, images: torch.Tensor, *, steps: int,
        batch: int, lr: float, generator: torch.Generator,
        on_step: Callable[[int, float], None] = lambda step, loss: None) -> UNet2DModel:
    """Train `net` by Adam on `images` (N, 1, H, W in [-1, 1]) for `steps` minibatches and return
    the exponential moving average of its weights (what gets shipped); `on_step` sees each loss."""
    optimiser = torch.optim.Adam(net.parameters(), lr=lr)
    ema = EMAModel(net.parameters(), decay=0.999, use_ema_warmup=True)
    net.train()
    for step in range(steps):
        idx = torch.randint(0, images.shape[0], (batch,), generator=generator)
        loss = denoising_loss(net, schedule, _augment(images[idx], generator), generator)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        ema.step(net.parameters())
        on_step(step, loss.item())
    ema.copy_to(net.parameters())
    return net.eval()


@torch.no_grad()
def sample(net: UNet2DModel, schedule: DDPMScheduler, count: int, generator: torch.Generator,
           steps: int = 250) -> torch.Tensor:
    """`count` images from the reverse process (eq. 6) in `steps` ancestral DDPM steps."""
    size = net.config.sample_size
    x = torch.randn((count, 1, size, size), generator=generator)
    sampler = DDPMScheduler.from_config(schedule.config)
    sampler.set_timesteps(steps)
    for t in sampler.timesteps:
        eps = net(x, t).sample
        x = sampler.step(eps, int(t), x, generator=generator).prev_sample
    return x
