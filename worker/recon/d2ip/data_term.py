"""The data fidelity term of eq. (14) and the whitened linear model (1).

`whitened_system` is the one place D2IP chooses its operator: the model's shared whitened
operator `ForwardModel.operator` (A = W^1/2 J, weights w, its cached range basis;
`worker.forward.operator`), or with `whiten=False` the paper's plain MSE, J with unit weights.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from worker.forward.operator import JacobianOperator

if TYPE_CHECKING:
    from worker.forward.model import ForwardModel

RANGE_RTOL = 1e-6  # below the float32 resolution of J: the range cut drops only rounding noise


def whitened_system(model: ForwardModel, whiten: bool = True) -> JacobianOperator:
    """The operator of eq. (1) that D2IP fits: the model's whitened one, or J itself (unit
    weights) when not whitening; a frame's measurements become `weights * Delta v`."""
    if whiten:
        return model.operator
    return JacobianOperator(model.jacobian, np.ones(model.n_measurements))


def range_basis(jacobian: Tensor, rtol: float = RANGE_RTOL) -> Tensor:
    """U_r (M, r) of a Jacobian given as a tensor, by the shared operator's decomposition
    (`JacobianOperator.range_basis`), as float32 on the Jacobian's device."""
    operator = JacobianOperator(jacobian.detach().cpu().to(torch.float64).numpy(),
                                np.ones(int(jacobian.shape[0])))
    return torch.from_numpy(operator.range_basis(rtol)).to(torch.float32).to(jacobian.device)


class DataTerm:
    """The data fidelity of eq. (14) as a mean squared residual, (1/M) ||J x - Delta v||^2,
    via J's range.

    With U_r the left singular vectors of J with s_i > rtol * s_max (`range_basis`, or the
    model operator's `range_basis(rtol)`),
    ||J x - dv||^2 = ||U_r^T J x - U_r^T dv||^2 + ||dv - U_r U_r^T dv||^2 + (dropped part of J x),
    so the per-iteration products use B = U_r^T J (r x V) instead of J (M x V). With rtol =
    `RANGE_RTOL` the dropped part is rounding noise and the loss is exact; r is J's numerical
    rank, which is below M when measurements are redundant (the default protocol keeps
    reciprocal pairs: M = 928, rank <= 464). `basis=None` keeps J as it is. The products run on
    J's device (`matvec`: a torch matmul; `cpu.fused_loss.FusedDataTerm` overrides it with its
    threaded product).
    """

    def __init__(self, jacobian: Tensor, basis: Tensor | None) -> None:
        self.n_meas = int(jacobian.shape[0])
        self.range: Tensor | None = None
        self._projected: tuple[Tensor, int, Tensor, Tensor] | None = None  # see `_project`
        if basis is None:
            self.basis = jacobian.to(torch.float32).contiguous()
        else:
            transposed = basis.T.to(torch.float32).contiguous().to(jacobian.device)  # (r, M)
            self.basis = (transposed @ jacobian.to(torch.float32)).contiguous()
            self.range = transposed

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
        target, outside_sq = self._target(dv)
        return self._mean_square(self.matvec(self.basis, values) - target, outside_sq)

    def amplitude_fit(self, values: Tensor, dv: Tensor) -> tuple[Tensor, Tensor]:
        """(alpha, data term at alpha x): the least-squares amplitude of the values x against
        the data, alpha = max(0, <J x, dv> / ||J x||^2), the minimiser of ||alpha J x - dv||^2
        over alpha >= 0 (0 when J x = 0). One product with J, the one the data term makes."""
        jx = self.matvec(self.basis, values)
        target, outside_sq = self._target(dv)
        energy = (jx * jx).sum()
        alpha = torch.where(energy > 0, (jx * target).sum() / energy.clamp_min(1e-30),
                            energy.new_zeros(())).clamp_min(0.0)
        return alpha, self._mean_square(alpha * jx - target, outside_sq)

    def _target(self, dv: Tensor) -> tuple[Tensor, Tensor | None]:
        """dv in the basis' coordinates and its squared norm outside the range (None when the
        basis is J itself)."""
        return (dv, None) if self.range is None else self._project(dv)

    def _mean_square(self, r: Tensor, outside_sq: Tensor | None) -> Tensor:
        """(1/M) (||r||^2 + the part of dv outside the range)."""
        total = (r * r).sum()
        return (total if outside_sq is None else total + outside_sq) / self.n_meas

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
