"""Masked forward differences and the spatial total variation derived from them.

D_a, a ∈ {P, R, C}, takes the V values inside the mask (C order of the (P, R, C) grid) to the
difference between each voxel and its next neighbour along axis a, zero where that neighbour
lies outside the mask or the grid (Neumann boundary at the body's edge): a difference counts
only when both voxels lie inside. D = (D_P, D_R, D_C) maps (V,) to (3, V); ‖D‖² ≤ 4 · 3 = 12.

The spatial TV of D2IP eq. (12) (R_spatial of eq. (11)), isotropic and ε-smoothed:

    TV_ε(x) = (1/V) Σ_v sqrt((D_P x)_v² + (D_R x)_v² + (D_C x)_v² + ε).

Two forms of the same sum: `total_variation` on the V values (gathers through D), and
`volume_total_variation` on the (P, R, C) volume, with the masks of `VolumeDifference`, which
are read off D (where D_a has a difference): shifted slices instead of gathers, and no
scatter in its gradient (deterministic on CUDA), D2IP's reference form. The TV and R-SIP
methods and the data-scaled λ rule use the first; D2IP's fused C++ kernel
(`worker/recon/d2ip/cpu/kernels/tv.cpp`) reads the same masks and computes the same sum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

NORM_SQ_BOUND = 12.0  # ‖D‖² bound on a 3D grid


class MaskedDifference:
    """D: forward differences of the V masked voxel values along P, R and C (module doc)."""

    def __init__(self, mask: np.ndarray, device: torch.device | str = "cpu") -> None:
        mask = np.asarray(mask, dtype=bool)
        if mask.ndim != 3 or not mask.any():
            raise ValueError("mask: expected a non-empty boolean (P, R, C) array")
        index = np.full(mask.shape, -1, dtype=np.int64)
        index[mask] = np.arange(int(mask.sum()))
        own = index[mask]
        rows = []
        for axis in range(3):
            following = np.full(mask.shape, -1, dtype=np.int64)
            source = [slice(None)] * 3
            target = [slice(None)] * 3
            source[axis], target[axis] = slice(1, None), slice(None, -1)
            following[tuple(target)] = index[tuple(source)]
            neighbour = following[mask]
            rows.append(np.where(neighbour >= 0, neighbour, own))  # no neighbour: zero
        self.shape = (int(mask.shape[0]), int(mask.shape[1]), int(mask.shape[2]))
        self.voxels = torch.from_numpy(np.flatnonzero(mask)).to(device)  # (V,) flat C order
        self.neighbours = torch.from_numpy(np.stack(rows)).to(device)  # (3, V)
        self.n_voxels = int(own.size)

    def apply(self, values: Tensor) -> Tensor:
        """D x: (V,) -> (3, V) differences."""
        return values[self.neighbours] - values

    def adjoint(self, differences: Tensor) -> Tensor:
        """Dᵀ g: (3, V) -> (V,)."""
        out = -differences.sum(0)
        return out.index_add(0, self.neighbours.reshape(-1), differences.reshape(-1))

    def has_difference(self) -> Tensor:
        """(3, V) bool: where D_a has a difference (the neighbour along a lies inside)."""
        own = torch.arange(self.n_voxels, device=self.neighbours.device)
        return self.neighbours != own


def total_variation(values: Tensor, difference: MaskedDifference, eps: float) -> Tensor:
    """TV_ε(x), D2IP eq. (12) (differentiable), for the V masked values x."""
    return torch.sqrt(difference.apply(values).square().sum(0) + eps).mean()


@dataclass(frozen=True)
class VolumeDifference:
    """D on the (P, R, C) volume: float grids, 1 `inside` the mask, and per axis 1 where D_a
    has a difference, `pair_p` (P-1, R, C), `pair_r` (P, R-1, C), `pair_c` (P, R, C-1)."""

    inside: Tensor
    pair_p: Tensor
    pair_r: Tensor
    pair_c: Tensor
    n_inside: int

    @classmethod
    def from_difference(cls, difference: MaskedDifference) -> VolumeDifference:
        device = difference.neighbours.device

        def on_grid(flags: Tensor) -> Tensor:
            grid = torch.zeros(difference.shape, dtype=torch.float32, device=device)
            grid.view(-1)[difference.voxels] = flags.to(torch.float32)
            return grid

        pairs = [on_grid(row) for row in difference.has_difference()]
        return cls(inside=on_grid(torch.ones(difference.n_voxels, device=device)),
                   pair_p=pairs[0][:-1].contiguous(), pair_r=pairs[1][:, :-1].contiguous(),
                   pair_c=pairs[2][:, :, :-1].contiguous(), n_inside=difference.n_voxels)


def volume_total_variation(volume: Tensor, grid: VolumeDifference, eps: float) -> Tensor:
    """TV_ε of the voxels of a (P, R, C) `volume` inside the mask: `total_variation`'s sum
    (module docstring) with shifted slices of the volume."""
    dp = F.pad((volume[1:] - volume[:-1]) * grid.pair_p, (0, 0, 0, 0, 0, 1))
    dr = F.pad((volume[:, 1:] - volume[:, :-1]) * grid.pair_r, (0, 0, 0, 1))
    dc = F.pad((volume[:, :, 1:] - volume[:, :, :-1]) * grid.pair_c, (0, 1))
    tv = torch.sqrt(dp * dp + dr * dr + dc * dc + eps) * grid.inside
    return tv.sum() / grid.n_inside
