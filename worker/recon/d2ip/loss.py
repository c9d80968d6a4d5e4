"""D2IP loss, eq. (11): l2 data fidelity + lambda (lambda_s spatial TV (8) + lambda_t temporal (9)).

Choices (see docs/d2ip.md):
- data fidelity is the mean squared residual, mean_m (J sigma - Delta v)_m^2 (the paper's Fig. 5
  plots the "measurement-domain MSE loss");
- spatial TV (8): isotropic forward differences, eps inside the square root, mean over the V
  voxels inside the mask; a difference counts only when both voxels lie inside the mask;
- temporal TV (9): mean over the V voxels (the paper writes a sum; the mean matches (8) so that
  lambda_s and lambda_t weigh like quantities), weights alpha = exp(-(i - j)) normalised over the
  previous frames present, at most `window` of them (the weight left out is exp(-window) of the
  total, 4.5e-5 for 10 frames).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from worker.recon.d2ip.mapping import mask_indices


@dataclass(frozen=True)
class LossConfig:
    """Weights of eq. (11) (paper IV.D), TV smoothing eps and the temporal window."""

    lam: float = 0.002  # lambda_TV
    lam_s: float = 1.0
    lam_t: float = 0.1
    eps: float = 1e-6  # TV acts as l1 above |difference| ~ sqrt(eps) = 1e-3 (0.1 % change)
    window: int = 10  # previous frames in the temporal TV


@dataclass(frozen=True)
class MaskGeometry:
    """Precomputed mask tensors: flat indices and which forward differences lie inside."""

    index: Tensor  # (V,) flat C-order indices of the voxels inside
    inside: Tensor  # (P, R, C) float, 1 inside
    pair_p: Tensor  # (P-1, R, C) float, 1 where voxel and its +P neighbour are inside
    pair_r: Tensor  # (P, R-1, C)
    pair_c: Tensor  # (P, R, C-1)

    @classmethod
    def from_mask(cls, mask: Tensor) -> MaskGeometry:
        m = mask.to(torch.bool)
        if m.ndim != 3 or not bool(m.any()):
            raise ValueError("mask must be a non-empty boolean (P, R, C) tensor")
        f = torch.float32
        return cls(index=mask_indices(m), inside=m.to(f),
                   pair_p=(m[1:] & m[:-1]).to(f), pair_r=(m[:, 1:] & m[:, :-1]).to(f),
                   pair_c=(m[:, :, 1:] & m[:, :, :-1]).to(f))

    @property
    def n_inside(self) -> int:
        return int(self.index.numel())


def spatial_tv(volume: Tensor, geom: MaskGeometry, eps: float) -> Tensor:
    """Eq. (8): (1/V) sum_inside sqrt(dp^2 + dr^2 + dc^2 + eps), masked forward differences."""
    dp = F.pad((volume[1:] - volume[:-1]) * geom.pair_p, (0, 0, 0, 0, 0, 1))
    dr = F.pad((volume[:, 1:] - volume[:, :-1]) * geom.pair_r, (0, 0, 0, 1))
    dc = F.pad((volume[:, :, 1:] - volume[:, :, :-1]) * geom.pair_c, (0, 1))
    tv = torch.sqrt(dp * dp + dr * dr + dc * dc + eps) * geom.inside
    return tv.sum() / geom.n_inside


def temporal_tv(values: Tensor, previous: Tensor, weights: Tensor, eps: float) -> Tensor:
    """Eq. (9): sum_j w_j mean_v sqrt((x_v - x_{j,v})^2 + eps), `previous` (K, V), `weights` (K,).

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


def _gram64(jacobian: Tensor, block: int = 8192) -> Tensor:
    """J J^T accumulated in float64 over column blocks (M x M; J may be large)."""
    m = jacobian.shape[0]
    gram = torch.zeros(m, m, dtype=torch.float64)
    for start in range(0, jacobian.shape[1], block):
        cols = jacobian[:, start:start + block].to(torch.float64)
        gram += cols @ cols.T
    return gram


def _matmul_vector(a: Tensor, x: Tensor) -> Tensor:
    return (a @ x.unsqueeze(1)).squeeze(1)  # mm, so FlopCounterMode sees it


class DataTerm:
    """l2 data fidelity as a mean squared residual, (1/M) ||J x - Delta v||^2, via J's range.

    With J J^T = U diag(s^2) U^T and U_r the columns with s_i > rtol * s_max,
    ||J x - dv||^2 = ||U_r^T J x - U_r^T dv||^2 + ||dv - U_r U_r^T dv||^2 + (dropped part of J x),
    so the per-iteration products use B = U_r^T J (r x V) instead of J (M x V). With the default
    rtol = 1e-6 (below float32 resolution of J itself) the dropped part is rounding noise and the
    loss is exact; r is J's numerical rank, which is below M when measurements are redundant
(the default protocol keeps reciprocal pairs: M = 928, rank <= 464).
    `rtol=None` keeps J as it is. The decomposition runs on the CPU (float64); the products run
    on J's device, with `matvec(B, x)` (default: a torch matmul; the fused CPU kernels pass
    their threaded product).
    """

    def __init__(self, jacobian: Tensor, rtol: float | None = 1e-6,
                 matvec: Callable[[Tensor, Tensor], Tensor] | None = None) -> None:
        self.n_meas = int(jacobian.shape[0])
        self.matvec = matvec or _matmul_vector
        self.range: Tensor | None = None
        self._projected: tuple[Tensor, int, Tensor, Tensor] | None = None  # see `_project`
        if rtol is None:
            self.basis = jacobian.to(torch.float32).contiguous()
        else:
            cpu = jacobian.detach().cpu()
            lam, vecs = torch.linalg.eigh(_gram64(cpu))
            keep = lam > (rtol ** 2) * lam.max()
            u = vecs[:, keep].T.to(torch.float32).contiguous()  # U_r^T, (r, M)
            self.basis = (u @ cpu.to(torch.float32)).contiguous().to(jacobian.device)
            self.range = u.to(jacobian.device)

    @property
    def rank(self) -> int:
        return int(self.basis.shape[0])

    def __call__(self, values: Tensor, dv: Tensor) -> Tensor:
        """(1/M) ||J values - dv||^2 for values (V,) and measurements dv (M,)."""
        jx = self.matvec(self.basis, values)
        if self.range is None:
            r = jx - dv
            return (r * r).sum() / self.n_meas
        a, outside_sq = self._project(dv)
        r = jx - a
        return ((r * r).sum() + outside_sq) / self.n_meas

    def _project(self, dv: Tensor) -> tuple[Tensor, Tensor]:
        """(U_r^T dv, ||dv - U_r U_r^T dv||^2), kept while the same `dv` comes back unchanged
        (every iteration of a frame passes the same tensor)."""
        cached = self._projected
        if cached is None or cached[0] is not dv or cached[1] != dv._version:
            assert self.range is not None
            a = self.range @ dv
            outside = dv - self.range.T @ a
            cached = (dv, dv._version, a, (outside * outside).sum())
            self._projected = cached
        return cached[2], cached[3]


class VolumeWindow:
    """The last `window` reconstructed frames (V values each), oldest first, for eq. (9)."""

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
