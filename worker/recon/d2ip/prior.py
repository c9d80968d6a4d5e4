"""The 4D-TV prior of D2IP, eq. (11): lambda_s R_spatial (12) + lambda_t R_temporal (13).

Choices (see docs/d2ip.md):
- spatial TV (12): the project's one TV (`worker.recon.finite_difference`) in its volume form
  (`volume_total_variation`): isotropic forward differences on the body mask (a difference
  counts only when both voxels lie inside), eps inside the square root, mean over the V voxels
  inside the mask;
- temporal TV (13): mean over the V voxels (the paper writes a sum; the mean matches (12) so
  that lambda_s and lambda_t weigh like quantities), weights alpha = exp(-(i - j)) normalised
  over the previous frames present, at most `window` of them (the weight left out is
  exp(-window) of the total, 4.5e-5 for 10 frames), held by `VolumeWindow`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor

from worker.recon.finite_difference import (
    MaskedDifference,
    VolumeDifference,
    volume_total_variation,
)


@dataclass(frozen=True)
class MaskGeometry:
    """The mask of a grid: the flat indices of the voxels inside and the masked differences D
    of eq. (12), on the V values (`difference`) and on the volume (`volume`)."""

    difference: MaskedDifference
    volume: VolumeDifference

    @classmethod
    def from_mask(cls, mask: Tensor) -> MaskGeometry:
        inside = mask.to(torch.bool)
        if inside.ndim != 3 or not bool(inside.any()):
            raise ValueError("mask must be a non-empty boolean (P, R, C) tensor")
        difference = MaskedDifference(inside.cpu().numpy(), device=inside.device)
        return cls(difference=difference, volume=VolumeDifference.from_difference(difference))

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.difference.shape

    @property
    def index(self) -> Tensor:
        """(V,) flat C-order indices of the voxels inside."""
        return self.difference.voxels

    @property
    def n_inside(self) -> int:
        return self.difference.n_voxels


def temporal_tv(values: Tensor, previous: Tensor, weights: Tensor, eps: float) -> Tensor:
    """Eq. (13): sum_j w_j mean_v sqrt((x_v - x_{j,v})^2 + eps), `previous` (K, V), `weights` (K,).

    `weights` come from `temporal_weights` (normalised alphas, 0 for empty slots).
    """
    d = values.unsqueeze(0) - previous
    return (weights * torch.sqrt(d * d + eps).mean(dim=1)).sum()


@functools.lru_cache(maxsize=64)  # called every iteration with the same few arguments
def temporal_weights(n_previous: int, window: int,
                     device: torch.device | str | None = None) -> Tensor:
    """alpha_{j,i} = exp(-(i - j)) / sum alpha for the slots of a window (oldest first).

    Slot k of `window` holds the frame k - window steps back from the current one (the last slot
    is the previous frame); only the last `n_previous` slots are filled, the others get weight 0.
    All zeros when there is no previous frame (the temporal term vanishes). The result is
    shared between calls: do not modify it.
    """
    n = min(n_previous, window)
    w = torch.zeros(window, dtype=torch.float32)
    if n:
        lags = torch.arange(n, 0, -1, dtype=torch.float64)  # n, ..., 1
        alpha = torch.exp(-lags)
        w[window - n:] = (alpha / alpha.sum()).to(torch.float32)
    return w.to(device)


class VolumeWindow:
    """The last `window` reconstructed frames (V values each), oldest first, for eq. (13)."""

    def __init__(self, n_values: int, window: int,
                 device: torch.device | str | None = None) -> None:
        self.frames = torch.zeros(window, n_values, dtype=torch.float32, device=device)
        self.count = 0

    @property
    def window(self) -> int:
        return self.frames.shape[0]

    def push(self, values: Tensor) -> None:
        """Append the newest reconstructed frame (detached), dropping the oldest."""
        self.frames = torch.cat([self.frames[1:], values.detach().reshape(1, -1).float()])
        self.count = min(self.count + 1, self.window)

    def weights(self) -> Tensor:
        return temporal_weights(self.count, self.window, self.frames.device)

    def state_dict(self) -> dict[str, Tensor | int]:
        return {"frames": self.frames.clone(), "count": self.count}

    def load_state_dict(self, state: dict[str, Tensor | int]) -> None:
        frames, count = state["frames"], state["count"]
        assert isinstance(frames, Tensor) and isinstance(count, int)
        if frames.shape != self.frames.shape:
            raise ValueError(f"window state has shape {tuple(frames.shape)}, "
                             f"expected {tuple(self.frames.shape)}")
        self.frames, self.count = frames.to(self.frames.device).clone(), count


class TV4D:
    """R_4D-TV of eq. (11): lam_s R_spatial (12) of the volume + lam_t R_temporal (13) of its
    values inside the mask against the previous frames. `cpu.fused_loss.FusedTV4D` computes
    the same in one C++ pass."""

    def __init__(self, geom: MaskGeometry, lam_s: float, lam_t: float, eps: float) -> None:
        self.geom, self.lam_s, self.lam_t, self.eps = geom, lam_s, lam_t, eps

    def __call__(self, volume: Tensor, values: Tensor, previous: Tensor,
                 weights: Tensor) -> Tensor:
        """`volume` (P, R, C), `values` (V,) its voxels inside the mask, `previous` (K, V) and
        their `weights` (K,) from `temporal_weights`."""
        return (self.lam_s * volume_total_variation(volume, self.geom.volume, self.eps)
                + self.lam_t * temporal_tv(values, previous, weights, self.eps))
