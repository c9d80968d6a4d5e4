"""How D2IP's pieces are computed: the execution strategy, chosen once per reconstructor.

`ReferenceExecution` is the paper's modules as they are, in plain torch on any device:
phi(theta | Z) = `FastResUNet3D.forward`, `DataTerm`, `TV4D`, `optimise.Adam`, no hook. A
faster strategy (`worker.recon.d2ip.cpu.CpuExecution`) overrides some of these with
implementations of the same functions; `variants.py` picks one. Nothing in the paper modules
depends on which.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from torch import Tensor

from worker.recon.d2ip.data_term import RANGE_RTOL, DataTerm, range_basis
from worker.recon.d2ip.mapping import OutputRange
from worker.recon.d2ip.network import FastResUNet3D
from worker.recon.d2ip.objective import LossConfig, Objective, Prior
from worker.recon.d2ip.optimise import Adam, IterationHook, Optimizer
from worker.recon.d2ip.prior import TV4D, MaskGeometry


class Execution(Protocol):
    """What a strategy supplies: phi, the two loss terms, the optimiser, an iteration hook, and
    the objective built from them."""

    name: str
    hook: IterationHook | None

    def phi(self, net: FastResUNet3D, z: Tensor) -> Callable[[], Tensor]: ...

    def data_term(self, jacobian: Tensor, basis: Tensor | None) -> DataTerm: ...

    def prior(self, geom: MaskGeometry, loss: LossConfig) -> Prior: ...

    def optimizer(self, net: FastResUNet3D, lr: float) -> Optimizer: ...

    def objective(self, net: FastResUNet3D, z: Tensor, jacobian: Tensor, mask: Tensor,
                  loss: LossConfig | None = None, out_range: OutputRange | None = None,
                  data_rtol: float | None = RANGE_RTOL,
                  data_basis: Tensor | None = None) -> Objective: ...


class ReferenceExecution:
    """Plain torch: the reference every other strategy is tested against."""

    name = "reference"

    def __init__(self) -> None:
        self.hook: IterationHook | None = None  # wraps every Adam iteration

    def phi(self, net: FastResUNet3D, z: Tensor) -> Callable[[], Tensor]:
        """phi(theta | Z) of `net`'s current parameters for the fixed input `z`."""
        return lambda: net(z)

    def data_term(self, jacobian: Tensor, basis: Tensor | None) -> DataTerm:
        return DataTerm(jacobian, basis)

    def prior(self, geom: MaskGeometry, loss: LossConfig) -> Prior:
        return TV4D(geom, loss.lam_s, loss.lam_t, loss.eps)

    def optimizer(self, net: FastResUNet3D, lr: float) -> Optimizer:
        return Adam(net, lr)

    def objective(self, net: FastResUNet3D, z: Tensor, jacobian: Tensor, mask: Tensor,
                  loss: LossConfig | None = None, out_range: OutputRange | None = None,
                  data_rtol: float | None = RANGE_RTOL,
                  data_basis: Tensor | None = None) -> Objective:
        """Eq. (14) for `net` with input `z`, (whitened) J (M, V) and the (P, R, C) mask, built
        from this strategy's pieces. The data term works through J's range: `data_basis`, its
        U_r when known (the model operator's `range_basis`), else computed from J with rank cut
        `data_rtol` (None: plain J)."""
        geom = MaskGeometry.from_mask(mask)
        if jacobian.ndim != 2 or jacobian.shape[1] != geom.n_inside:
            raise ValueError(f"J must be (M, V={geom.n_inside}), got {tuple(jacobian.shape)}")
        if data_basis is None and data_rtol is not None:
            data_basis = range_basis(jacobian, data_rtol)
        loss = loss or LossConfig()
        return Objective(net, z, self.data_term(jacobian, data_basis), self.prior(geom, loss),
                         loss, out_range, phi=self.phi(net, z))
