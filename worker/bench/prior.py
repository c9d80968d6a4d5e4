"""The diffusion prior on its own (docs/diff-inr-prior.md): does score distillation (eq. 14)
pull degraded shape images toward the clean shapes, and for which time-step sub-range?

Held-out shape images (a seed the training set did not use) are blurred and noised; each is
then moved by Adam on the SDS loss alone, no data term, for a few steps. SSIM and PSNR against
the clean image before and after say whether the prior points toward the data manifold; one
run per sub-range of t/T (seed 2, section 5.3) compares the ranges.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from skimage.filters import gaussian
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from worker.recon.diffinr.sds import SDSPrior
from worker.recon.diffinr.shapes import shape_images

HELD_OUT_SEED = 1000  # the training command's data seed is 0
T_RANGES = ((0.02, 0.2), (0.1, 0.5), (0.2, 0.6), (0.4, 0.8), (0.02, 0.98))


@dataclass(frozen=True)
class Degradation:
    """Gaussian blur (pixels) then white noise (std, in the [-1, 1] units)."""

    blur: float = 1.0
    noise: float = 0.15


def degraded_pairs(count: int, degradation: Degradation = Degradation(),
                   seed: int = HELD_OUT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """(clean, degraded) held-out images, each (count, 1, H, W)."""
    clean = shape_images(count, seed)
    rng = np.random.default_rng(seed + 1)
    blurred = np.stack([gaussian(im[0], degradation.blur)[None] for im in clean])
    noisy = blurred + degradation.noise * rng.standard_normal(clean.shape)
    return clean, np.clip(noisy, -1, 1).astype(np.float32)


def quality(clean: np.ndarray, images: np.ndarray) -> dict[str, float]:
    """Mean SSIM and PSNR over images in [-1, 1]."""
    ssim = [structural_similarity(c[0], x[0], data_range=2.0) for c, x in zip(clean, images)]
    psnr = [peak_signal_noise_ratio(c[0], x[0], data_range=2.0) for c, x in zip(clean, images)]
    return {"ssim": float(np.mean(ssim)), "psnr": float(np.mean(psnr))}


def sds_descent(prior: SDSPrior, images: np.ndarray, *, steps: int = 30, lr: float = 0.02,
                seed: int = 0) -> np.ndarray:
    """`images` after `steps` Adam steps on the SDS loss alone (fresh t and ε per step)."""
    x = torch.tensor(images, requires_grad=True)
    optimiser = torch.optim.Adam([x], lr=lr)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        optimiser.zero_grad(set_to_none=True)
        prior.loss(x, generator).backward()
        optimiser.step()
    return x.detach().clamp(-1, 1).numpy()


def t_range_study(prior: SDSPrior, *, count: int = 32, steps: int = 30, lr: float = 0.02,
                  ranges: tuple[tuple[float, float], ...] = T_RANGES) -> dict:
    """Quality of the degraded images, and after SDS descent with each sub-range of t/T."""
    clean, degraded = degraded_pairs(count)
    rows = []
    for t_range in ranges:
        moved = sds_descent(SDSPrior(prior.net, prior.schedule, t_range), degraded,
                            steps=steps, lr=lr)
        rows.append({"t_range": list(t_range), **quality(clean, moved)})
    return {"count": count, "steps": steps, "lr": lr, "degradation": vars(Degradation()),
            "degraded": quality(clean, degraded), "sds": rows}
