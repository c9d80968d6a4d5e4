"""A synthetic stand-in problem (mask, smooth Jacobian, two-lung Delta sigma) for tests and speed.

Not a forward model: rows of J are smooth random fields over the mask, so that J x sees the
low spatial frequencies the way an EIT sensitivity does, and the sizes match the real problem.
Like the project's default protocol (32 x 29 = 928 measurements keeping reciprocal pairs), every
row appears twice, so J has rank M / 2.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class SyntheticProblem:
    mask: Tensor  # (P, R, C) bool
    jacobian: Tensor  # (M, V) float32, rows of unit norm, each row twice (reciprocal pairs)
    truth: Tensor  # (V,) Delta sigma inside the mask
    dv: Tensor  # (M,) = J truth + noise


def thorax_mask(grid: tuple[int, int, int], fill: float = 0.92) -> Tensor:
    """An elliptic cylinder along P inscribed in the grid, radii scaled by `fill` (~66 % inside)."""
    axes = [(torch.arange(n, dtype=torch.float32) + 0.5) / n * 2 - 1 for n in grid[1:]]
    r, c = torch.meshgrid(*axes, indexing="ij")
    return ((r / fill) ** 2 + (c / fill) ** 2 <= 1.0).expand(grid).clone()


def two_lungs(grid: tuple[int, int, int], depth: float = -0.4) -> Tensor:
    """A (P, R, C) Delta sigma volume: two ellipsoidal lungs at `depth`, 0 elsewhere."""
    axes = [(torch.arange(n, dtype=torch.float32) + 0.5) / n * 2 - 1 for n in grid]
    p, r, c = torch.meshgrid(*axes, indexing="ij")
    vol = torch.zeros(grid)
    for centre in (-0.45, 0.45):
        inside = (p / 0.8) ** 2 + ((r - 0.05) / 0.55) ** 2 + ((c - centre) / 0.35) ** 2 <= 1.0
        vol[inside] = depth
    return vol


def make_problem(grid: tuple[int, int, int] = (16, 32, 32), n_meas: int = 928,
                 noise: float = 1e-3, seed: int = 0) -> SyntheticProblem:
    """Mask, J (smooth random rows, unit norm, in reciprocal pairs), truth and measurements."""
    if n_meas % 2:
        raise ValueError("n_meas must be even (reciprocal pairs)")
    gen = torch.Generator().manual_seed(seed)
    mask = thorax_mask(grid)
    coarse = torch.randn(n_meas // 2, 1, *(max(n // 2, 2) for n in grid), generator=gen)
    fields = F.interpolate(coarse, size=grid, mode="trilinear", align_corners=False)[:, 0]
    rows = fields.reshape(n_meas // 2, -1)[:, mask.reshape(-1)]
    jac = (rows / rows.norm(dim=1, keepdim=True)).repeat_interleave(2, dim=0)
    truth = two_lungs(grid)[mask]
    dv = jac @ truth + noise * torch.randn(n_meas, generator=gen)
    return SyntheticProblem(mask=mask, jacobian=jac.contiguous(), truth=truth, dv=dv)
