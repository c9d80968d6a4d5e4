"""One frame's objective L_i, eq. (14): phi(theta | Z) -> gamma (eq. 3) -> masked values ->
data term + lambda_TV R_4D-TV (eq. 11).

The pieces are objects: phi (any callable giving the network's (P, R, C) output for the fixed
Z), the data term (`data_term.DataTerm`) and the prior (`prior.TV4D`). An execution strategy
(`execution.py`) chooses their implementations; the loss is the same. Shapes are fixed (the
temporal window is always `LossConfig.window` slots with zero weights for empty ones).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import torch
from torch import Tensor

from worker.recon.d2ip.data_term import DataTerm
from worker.recon.d2ip.mapping import OutputRange
from worker.recon.d2ip.network import FastResUNet3D
from worker.recon.d2ip.prior import MaskGeometry, VolumeWindow


@dataclass(frozen=True)
class LossConfig:
    """Weights of eq. (14) and (11) (paper IV.D), TV smoothing eps and the temporal window."""

    lam: float = 0.002  # lambda_TV
    lam_s: float = 1.0
    lam_t: float = 0.1
    eps: float = 1e-6  # TV acts as l1 above |difference| ~ sqrt(eps) = 1e-3 (0.1 % change)
    window: int = 10  # previous frames in the temporal TV

    def __post_init__(self) -> None:
        if min(self.lam, self.lam_s, self.lam_t) < 0 or not self.eps > 0 or self.window < 1:
            raise ValueError(f"loss: weights must be >= 0, eps > 0 and window >= 1, got {self}")


class Prior(Protocol):
    """R_4D-TV (eq. 11) of the current volume against the previous frames."""

    geom: MaskGeometry

    def __call__(self, volume: Tensor, values: Tensor, previous: Tensor,
                 weights: Tensor) -> Tensor: ...


class LossTerms(NamedTuple):
    total: Tensor  # eq. (14)
    data: Tensor  # mean squared residual
    values: Tensor  # (V,) Delta sigma inside the mask, C order


class Objective:
    """L_i of eq. (14) of `net` for a measurement frame.

    `phi` evaluates phi(theta | Z) (default: `net(z)`, the reference); `data` and `prior` are
    the two terms; `loss` gives lambda_TV and the window size, `out_range` gamma (eq. 3).
    """

    def __init__(self, net: FastResUNet3D, z: Tensor, data: DataTerm, prior: Prior,
                 loss: LossConfig | None = None, out_range: OutputRange | None = None,
                 phi: Callable[[], Tensor] | None = None) -> None:
        self.geom = prior.geom
        if tuple(z.shape[2:]) != self.geom.shape:
            raise ValueError(f"Z grid {tuple(z.shape[2:])} != mask grid {self.geom.shape}")
        if data.n_values != self.geom.n_inside:
            raise ValueError(f"J must have V={self.geom.n_inside} columns, got {data.n_values}")
        self.net = net
        self.z = z
        self.data = data
        self.prior = prior
        self.loss = loss or LossConfig()
        self.out_range = out_range or OutputRange()
        self.phi = phi or (lambda: net(z))
        self._no_history = self.new_window()

    def new_window(self) -> VolumeWindow:
        """An empty temporal window of the right size (and device) for this objective."""
        return VolumeWindow(self.geom.n_inside, self.loss.window, self.z.device)

    def terms(self, dv: Tensor, previous: Tensor, weights: Tensor, lam: Tensor) -> LossTerms:
        """Eq. (14) for measurements `dv` (M,), previous frames (K, V) and their weights (K,),
        with lambda_TV `lam` (a 0-d tensor)."""
        return self.terms_of(self.phi(), dv, previous, weights, lam)

    def terms_of(self, output: Tensor, dv: Tensor, previous: Tensor, weights: Tensor,
                 lam: Tensor) -> LossTerms:
        """`terms` for a given network output phi(theta | Z) (P, R, C) (the batched sessions
        of `batched.py` evaluate phi for all sessions at once)."""
        volume = self.out_range.apply(output)
        values = volume.reshape(-1)[self.geom.index]
        data = self.data(values, dv)
        return LossTerms(data + lam * self.prior(volume, values, previous, weights), data,
                         values)

    def __call__(self, dv: Tensor, window: VolumeWindow | None = None,
                 lam: float | None = None) -> LossTerms:
        """Eq. (14); `lam` overrides `LossConfig.lam` (a per-frame lambda_TV)."""
        history = self._no_history if window is None else window
        lam_t = torch.tensor(self.loss.lam if lam is None else lam, dtype=torch.float32,
                             device=dv.device)
        return self.terms(dv.to(torch.float32), history.frames, history.weights(), lam_t)
