"""The diffusion prior as a regulariser: score distillation sampling (seed 2, eq. 14).

For a batch of 2D slices x (in the prior's [-1, 1] range, see `normalise`), each slice gets a
time step t drawn uniformly from a sub-range of [0, T) (section 5.3: a sub-range beats the full
one) and noise ε; with x_t = √ᾱ_t x + √(1-ᾱ_t) ε (eq. 5),

    L_SDS(x) = mean over slices and pixels of  w(t) · sg[ε̂_θ(x_t, t) - ε] · x          (eq. 14)

so that ∇_x L_SDS = w(t) (ε̂_θ(x_t, t) - ε) / (number of elements): the network's Jacobian is
never formed. We take w(t) = 1 - ᾱ_t (the noise variance, as in DreamFusion's SDS). The caller
weights the result by λ in its total loss (eq. 17): L = L_data + λ L_SDS.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import DDPMScheduler, UNet2DModel
from torch.nn import functional as F

from worker.recon.diffinr.diffusion import noise_level, vp_schedule
from worker.recon.diffinr.score_net import load_weights

DEFAULT_WEIGHTS = Path(__file__).with_name("prior.safetensors")
T_RANGE = (0.1, 0.5)  # default sub-range of t / T


class SDSPrior:
    """A frozen ε̂_θ with its schedule, applied to slices of any size through `loss`."""

    def __init__(self, net: UNet2DModel, schedule: DDPMScheduler,
                 t_range: tuple[float, float] = T_RANGE) -> None:
        if not 0.0 <= t_range[0] < t_range[1] <= 1.0:
            raise ValueError(f"t_range must satisfy 0 <= lo < hi <= 1, got {t_range}")
        self.net = net.eval().requires_grad_(False)
        self.schedule = schedule
        self.t_range = t_range

    @classmethod
    def load(cls, path: Path, t_range: tuple[float, float] = T_RANGE) -> SDSPrior:
        """The prior stored at `path` by `eitmon train diffusion-prior`."""
        net, meta = load_weights(path)
        return cls(net, vp_schedule(meta["schedule"]), t_range)

    @classmethod
    def load_default(cls, t_range: tuple[float, float] = T_RANGE) -> SDSPrior:
        """The prior shipped with the package (docs/diff-inr-prior.md says how it was trained)."""
        return cls.load(DEFAULT_WEIGHTS, t_range)

    @property
    def resolution(self) -> int:
        """The side of the images the prior was trained on."""
        return int(self.net.config.sample_size)

    @staticmethod
    def normalise(x: torch.Tensor, lo: float | torch.Tensor | None = None,
                  hi: float | torch.Tensor | None = None) -> torch.Tensor:
        """Map [lo, hi] affinely to the prior's [-1, 1] (the training images' range).

        By default lo and hi are x's own minimum and maximum over the whole tensor, so all
        slices of one volume share one map and a flat slice stays flat. The range is held fixed
        (no gradient flows through min and max): the map is a constant affine change of units.
        """
        lo = x.detach().amin() if lo is None else torch.as_tensor(lo, dtype=x.dtype)
        hi = x.detach().amax() if hi is None else torch.as_tensor(hi, dtype=x.dtype)
        return 2.0 * (x - lo) / torch.clamp(hi - lo, min=1e-12) - 1.0

    def resize(self, slices: torch.Tensor) -> torch.Tensor:
        """`slices` (B, 1, H, W) resampled bilinearly to the prior's resolution (if not already)."""
        r = self.resolution
        if slices.shape[-2:] == (r, r):
            return slices
        return F.interpolate(slices, size=(r, r), mode="bilinear", align_corners=False)

    def sample_times(self, count: int, generator: torch.Generator) -> torch.Tensor:
        """`count` integer time steps uniform in the sub-range [lo T, hi T)."""
        steps = self.schedule.config.num_train_timesteps
        lo = int(self.t_range[0] * steps)
        hi = max(int(self.t_range[1] * steps), lo + 1)
        return torch.randint(lo, hi, (count,), generator=generator)

    @torch.no_grad()
    def residual(self, x: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """w(t) (ε̂_θ(x_t, t) - ε) for slices x at the prior's resolution: eq. 14's sg[...] term."""
        x_t = self.schedule.add_noise(x, eps, t)
        weight = noise_level(self.schedule, t).to(x.dtype).view(-1, 1, 1, 1)
        return weight * (self.net.to(x.device)(x_t, t.to(x.device)).sample - eps)

    def loss(self, slices: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Eq. 14 for `slices` (B, 1, H, W), already normalised: a scalar whose gradient wrt the
        slices is the stop-gradient residual; t and ε are drawn from `generator` (on the CPU)."""
        x = self.resize(slices)
        t = self.sample_times(x.shape[0], generator)
        eps = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        return (self.residual(x, t.to(x.device), eps) * x).mean()
