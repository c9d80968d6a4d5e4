"""Spatial total variation on the masked voxels, shared by the TV and R-SIP methods.

The spatial term of D2IP eq. (8), R_spatial of eq. (9)/(10): isotropic and ε-smoothed,

    TV_ε(x) = (1/V) Σ_v sqrt((D_P x)_v² + (D_R x)_v² + (D_C x)_v² + ε),

with forward differences D_a between a masked voxel and its next neighbour along axis a, zero
where that neighbour lies outside the mask or the grid (Neumann boundary at the body's edge).
‖D‖² ≤ 4 · 3 = 12.

Parameter rules (both methods, per frame, from the Tikhonov solution x_T of the same frame):
- ε = (EPS_REL · g)², g the rms of |∇x_T| over the voxels: smoothing at 1 % of the image's
  typical gradient, so it scales with the data;
- λ = KAPPA · ‖W^½Δv‖² / TV_ε(x_T): the TV term at x_T weighs KAPPA times the data energy.
  KAPPA = 0.02 sits between 0.01 and 0.03, the best CC and the best edema PSNR/ERR of a sweep
  (0.01, 0.03, 0.1) on the simulated cases (docs/reconstruction.md). R-SIP minimises the same
  objective through its network, so it shares the rule.
Both scale with the data (b -> c b gives ε -> c² ε, λ -> c λ), so the reconstruction is
homogeneous of degree one in Δv like Tikhonov's: a shallow breath is not flattened by a
threshold tuned for a deep one.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

NORM_SQ_BOUND = 12.0  # ‖D‖² bound on a 3D grid
EPS_REL = 0.01
KAPPA = 0.02


class Gradient:
    """Forward differences of the V masked voxel values along P, R and C."""

    def __init__(self, mask: np.ndarray, device: torch.device | str = "cpu") -> None:
        mask = np.asarray(mask, dtype=bool)
        index = np.full(mask.shape, -1, dtype=np.int64)
        index[mask] = np.arange(int(mask.sum()))
        own = index[mask]
        rows = []
        for axis in range(3):
            nxt = np.full(mask.shape, -1, dtype=np.int64)
            src = [slice(None)] * 3
            dst = [slice(None)] * 3
            src[axis], dst[axis] = slice(1, None), slice(None, -1)
            nxt[tuple(dst)] = index[tuple(src)]
            nb = nxt[mask]
            rows.append(np.where(nb >= 0, nb, own))  # no neighbour: a zero difference
        self.neighbours = torch.from_numpy(np.stack(rows)).to(device)  # (3, V)
        self.n = int(own.size)

    def __call__(self, x: Tensor) -> Tensor:
        """(V,) -> (3, V) differences."""
        return x[self.neighbours] - x

    def adjoint(self, g: Tensor) -> Tensor:
        """Dᵀ: (3, V) -> (V,)."""
        out = -g.sum(0)
        return out.index_add(0, self.neighbours.reshape(-1), g.reshape(-1))


def magnitude(g: Tensor, eps: float) -> Tensor:
    """sqrt(|∇x|² + ε) per voxel from (3, V) differences."""
    return torch.sqrt(g.square().sum(0) + eps)


def total_variation(x: Tensor, grad: Gradient, eps: float) -> Tensor:
    """TV_ε(x), D2IP eq. (10) (differentiable)."""
    return magnitude(grad(x), eps).mean()


def frame_parameters(grad: Gradient, x_tik: Tensor, data_energy: float,
                     lam: float | None = None) -> tuple[float, float]:
    """(λ, ε) for one frame by the module's rules; a given `lam` overrides λ's rule.

    Needs a frame with data (data_energy > 0, so x_tik is not constant).
    """
    g = grad(x_tik)
    eps = float(EPS_REL**2 * g.square().sum(0).mean())
    if lam is None:
        lam = KAPPA * data_energy / float(total_variation(x_tik, grad, eps))
    return float(lam), eps
