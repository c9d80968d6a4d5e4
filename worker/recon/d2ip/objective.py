"""One frame's objective: phi(theta | Z) -> gamma (eq. 3) -> masked values -> loss (eq. 11).

The whole chain (network, output mapping, J product, both TV terms) is one function of the
network parameters, so `torch.compile` can fuse the elementwise work around the matmuls.
Shapes are fixed (the temporal window is always `LossConfig.window` slots with zero weights for
empty ones), so the compiled graph is built once per problem size.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from worker.recon.d2ip import fused as fused_kernels
from worker.recon.d2ip import fused_loss, ops_cl
from worker.recon.d2ip.loss import (
    DataTerm,
    LossConfig,
    MaskGeometry,
    VolumeWindow,
    spatial_tv,
    temporal_tv,
)
from worker.recon.d2ip.mapping import OutputRange
from worker.recon.d2ip.network import FastResUNet3D


class LossTerms(NamedTuple):
    total: Tensor  # eq. (11)
    data: Tensor  # mean squared residual
    values: Tensor  # (V,) Delta sigma inside the mask, C order


class Objective:
    """Loss (11) of `net` for a measurement frame.

    `fast` picks the channels-last path (else the eager reference path); `fused` runs its
    units, the data term's J products and the TV prior in the fused CPU kernels (None: when
    `fused.available()`, on CPU, not compiled); `data_rtol` is the rank cut of the data term
    (see `DataTerm`; None: plain J); `compile` wraps the loss in `torch.compile` (works on CPU,
    but did not pay on our 2-core box: see docs/d2ip.md).
    """

    def __init__(self, net: FastResUNet3D, z: Tensor, jacobian: Tensor, mask: Tensor,
                 loss: LossConfig | None = None, out_range: OutputRange | None = None,
                 fast: bool = True, data_rtol: float | None = 1e-6,
                 compile: bool = False, fused: bool | None = None) -> None:
        self.geom = MaskGeometry.from_mask(mask)
        if tuple(z.shape[2:]) != tuple(mask.shape):
            raise ValueError(f"Z grid {tuple(z.shape[2:])} != mask grid {tuple(mask.shape)}")
        if jacobian.ndim != 2 or jacobian.shape[1] != self.geom.n_inside:
            raise ValueError(f"J must be (M, V={self.geom.n_inside}), got {tuple(jacobian.shape)}")
        if fused is None:
            fused = fast and not compile and z.device.type == "cpu" and fused_kernels.available()
        if fused and not (fast and z.device.type == "cpu" and fused_kernels.available()):
            raise ValueError("fused kernels need the fast path on CPU and a C++ compiler")
        self.fused = fused
        self.net = net
        self.z = z
        self.data = DataTerm(jacobian, data_rtol, fused_loss.matvec if fused else None)
        self.loss = loss or LossConfig()
        self.out_range = out_range or OutputRange()
        self.fast = fast
        self.patches = ops_cl.dense3_patches(z) if fast else None
        self._no_history = self.new_window()
        self._terms = torch.compile(self.terms, dynamic=False) if compile else self.terms

    def new_window(self) -> VolumeWindow:
        """An empty temporal window of the right size (and device) for this objective."""
        return VolumeWindow(self.geom.n_inside, self.loss.window, self.z.device)

    def sigmoid_volume(self) -> Tensor:
        """phi(theta | Z): the network's (P, R, C) output in (0, 1)."""
        if self.patches is not None:
            return self.net.forward_cl(self.patches, fused=self.fused)
        return self.net(self.z)

    def terms(self, dv: Tensor, previous: Tensor, weights: Tensor, lam: Tensor) -> LossTerms:
        """Eq. (11) for measurements `dv` (M,), previous frames (K, V) and their weights (K,),
        with lambda_TV `lam` (a 0-d tensor, so a compiled graph serves every value)."""
        cfg = self.loss
        volume = self.out_range.apply(self.sigmoid_volume())
        values = volume.reshape(-1)[self.geom.index]
        data = self.data(values, dv)
        if self.fused:
            reg = fused_loss.tv_prior(volume, self.geom, previous, weights, cfg.eps,
                                         cfg.lam_s, cfg.lam_t)
        else:
            reg = (cfg.lam_s * spatial_tv(volume, self.geom, cfg.eps)
                   + cfg.lam_t * temporal_tv(values, previous, weights, cfg.eps))
        return LossTerms(data + lam * reg, data, values)

    def __call__(self, dv: Tensor, window: VolumeWindow | None = None,
                 lam: float | None = None) -> LossTerms:
        """Eq. (11); `lam` overrides `LossConfig.lam` (a per-frame lambda_TV)."""
        w = self._no_history if window is None else window
        lam_t = torch.tensor(self.loss.lam if lam is None else lam, dtype=torch.float32,
                             device=dv.device)
        return self._terms(dv.to(torch.float32), w.frames, w.weights(), lam_t)
