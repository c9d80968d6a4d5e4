"""The data fidelity term of eq. (14) and the whitening of the linear model (1).

`whitened_system` is the one place D2IP whitens: W^1/2 J and the weights w that whiten each
frame's Delta v, with the data weights of `worker.recon.spectral` (as every baseline: mean of
w^2 is 1, so lambda keeps its scale); `whiten=False` gives the paper's plain MSE.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from worker.recon.spectral import data_weights

if TYPE_CHECKING:
    from worker.forward.model import ForwardModel


def whitened_system(model: ForwardModel, whiten: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(w, W^1/2 J): the data weights (ones when not whitening) and the whitened Jacobian
    (M, V); a frame's measurements become w * Delta v."""
    w = data_weights(model) if whiten else np.ones(model.n_measurements)
    return w, model.jacobian * w[:, None]


def _gram64(jacobian: Tensor, block: int = 8192) -> Tensor:
    """J J^T accumulated in float64 over column blocks (M x M; J may be large)."""
    m = jacobian.shape[0]
    gram = torch.zeros(m, m, dtype=torch.float64)
    for start in range(0, jacobian.shape[1], block):
        cols = jacobian[:, start:start + block].to(torch.float64)
        gram += cols @ cols.T
    return gram


class DataTerm:
    """The data fidelity of eq. (14) as a mean squared residual, (1/M) ||J x - Delta v||^2,
    via J's range.

    With J J^T = U diag(s^2) U^T and U_r the columns with s_i > rtol * s_max,
    ||J x - dv||^2 = ||U_r^T J x - U_r^T dv||^2 + ||dv - U_r U_r^T dv||^2 + (dropped part of J x),
    so the per-iteration products use B = U_r^T J (r x V) instead of J (M x V). With the default
    rtol = 1e-6 (below float32 resolution of J itself) the dropped part is rounding noise and the
    loss is exact; r is J's numerical rank, which is below M when measurements are redundant
    (the default protocol keeps reciprocal pairs: M = 928, rank <= 464).
    `rtol=None` keeps J as it is. The decomposition runs on the CPU (float64); the products run
    on J's device (`matvec`: a torch matmul; `cpu.fused_loss.FusedDataTerm` overrides it with
    its threaded product).
    """

    def __init__(self, jacobian: Tensor, rtol: float | None = 1e-6) -> None:
        self.n_meas = int(jacobian.shape[0])
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

    @property
    def n_values(self) -> int:
        return int(self.basis.shape[1])

    def matvec(self, matrix: Tensor, x: Tensor) -> Tensor:
        """`matrix @ x` for the constant (r, V) basis and the values x (V,)."""
        return (matrix @ x.unsqueeze(1)).squeeze(1)  # mm, so FlopCounterMode sees it

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
