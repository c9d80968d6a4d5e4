"""Masked forward differences and the spatial total variation derived from them.

D_a, a ∈ {P, R, C}, takes the V values inside the mask (C order of the (P, R, C) grid) to the
difference between each voxel and its next neighbour along axis a, zero where that neighbour
lies outside the mask or the grid (Neumann boundary at the body's edge): a difference counts
only when both voxels lie inside. D = (D_P, D_R, D_C) maps (V,) to (3, V); ‖D‖² ≤ 4 · 3 = 12.

The spatial TV of D2IP eq. (8) (R_spatial of eq. (10)), isotropic and ε-smoothed:

    TV_ε(x) = (1/V) Σ_v sqrt((D_P x)_v² + (D_R x)_v² + (D_C x)_v² + ε).

The TV and R-SIP methods and the data-scaled λ rule use it; D2IP's fused C++ kernel
(`worker/recon/d2ip/kernels/tv.cpp`) is an accelerated version of the same sum.
"""

from __future__ import annotations

import numpy as np
import torch
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
        self.neighbours = torch.from_numpy(np.stack(rows)).to(device)  # (3, V)
        self.n_voxels = int(own.size)

    def apply(self, values: Tensor) -> Tensor:
        """D x: (V,) -> (3, V) differences."""
        return values[self.neighbours] - values

    def adjoint(self, differences: Tensor) -> Tensor:
        """Dᵀ g: (3, V) -> (V,)."""
        out = -differences.sum(0)
        return out.index_add(0, self.neighbours.reshape(-1), differences.reshape(-1))


def total_variation(values: Tensor, difference: MaskedDifference, eps: float) -> Tensor:
    """TV_ε(x), D2IP eq. (8) (differentiable), for the V masked values x."""
    return torch.sqrt(difference.apply(values).square().sum(0) + eps).mean()
