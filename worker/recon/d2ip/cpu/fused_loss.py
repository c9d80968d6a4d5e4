"""The loss's fused CPU operations with autograd (kernels `matvec.cpp`, `tv.cpp`; library and
threads in `library.py`): the data term's J products and the 4D-TV prior of eq. (11).

`FusedDataTerm` and `FusedTV4D` are `data_term.DataTerm` and `prior.TV4D` with these kernels
inside: the same interface and the same values (tested)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from worker.recon.d2ip.cpu.library import kernels, ptr, require_cpu_float32
from worker.recon.d2ip.data_term import DataTerm
from worker.recon.d2ip.prior import TV4D, MaskGeometry


class _MatVec(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, a: Tensor, x: Tensor) -> Tensor:
        lib = kernels()
        x = x.detach().contiguous()
        y = x.new_empty(a.shape[0])
        lib.eitmon_matvec(*a.shape, ptr(a), ptr(x), ptr(y))
        ctx.save_for_backward(a)
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, Tensor]:
        (a,) = ctx.saved_tensors
        return None, transposed_matvec(a, grad)


def matvec(a: Tensor, x: Tensor) -> Tensor:
    """`a @ x` for a constant contiguous (m, n) float32 CPU matrix and a vector x (n,), threaded
    (the data term's J product; no gradient for `a`)."""
    require_cpu_float32(a, "matvec", ndim=2)
    if not a.is_contiguous():
        raise ValueError("matvec takes a contiguous matrix")
    if a.requires_grad:
        raise ValueError("matvec has no gradient for the matrix")
    return _MatVec.apply(a, x.to(torch.float32))


def transposed_matvec(a: Tensor, y: Tensor, out: Tensor | None = None) -> Tensor:
    """`a.T @ y` for a contiguous (m, n) float32 or float16 CPU matrix and a float32 y (m,),
    threaded, summed in float32, without autograd; written into `out` (n,) when given. The data
    term's backward, and a single frame's linear reconstruction (`worker.recon.linear`; a
    float16 matrix reads half the bytes, each element converted exactly as it is loaded)."""
    half = a.dtype == torch.float16
    if not half:
        require_cpu_float32(a, "transposed_matvec", ndim=2)
    elif a.device.type != "cpu" or a.ndim != 2:
        raise ValueError("transposed_matvec takes float32 or float16 CPU matrices")
    require_cpu_float32(y, "transposed_matvec", ndim=1)
    if out is None:
        out = y.new_empty(a.shape[1])
    if not (a.is_contiguous() and out.is_contiguous()) or y.shape != a.shape[:1] \
            or out.shape != a.shape[1:] or out.dtype != torch.float32:
        raise ValueError("transposed_matvec takes a contiguous (m, n) matrix, y (m,) and out "
                         "(n,) float32")
    y = y.detach().contiguous()
    product = kernels().eitmon_matvec_t_half if half else kernels().eitmon_matvec_t
    product(*a.shape, ptr(a), ptr(y), ptr(out))
    return out


class _TVPrior(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, volume: Tensor, geom: MaskGeometry, previous: Tensor, weights: Tensor,
                eps: float, lam_s: float, lam_t: float) -> Tensor:
        lib = kernels()
        volume = volume.contiguous()
        previous, weights = previous.contiguous(), weights.contiguous()
        grad = torch.empty_like(volume)
        grid = geom.volume  # the masks of the shared difference operator D
        value = lib.eitmon_tv_prior(
            *volume.shape, *map(ptr, (volume, grid.inside, grid.pair_p, grid.pair_r,
                                       grid.pair_c)),
            geom.n_inside, ptr(geom.index), previous.shape[0], ptr(previous), ptr(weights),
            eps, lam_s, lam_t, ptr(grad))
        ctx.save_for_backward(grad)
        return volume.new_tensor(value)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:
        (grad,) = ctx.saved_tensors
        return grad * g, None, None, None, None, None, None


def tv_prior(volume: Tensor, geom: MaskGeometry, previous: Tensor, weights: Tensor, eps: float,
             lam_s: float, lam_t: float) -> Tensor:
    """`lam_s * finite_difference.total_variation(x, geom.difference, eps) + lam_t *
    prior.temporal_tv(x, previous, weights, eps)` for the voxels x of `volume` inside the mask
    (eq. 11-13), with its gradient, in one C++ pass."""
    require_cpu_float32(volume, "tv_prior", ndim=3)
    if previous.shape != (weights.shape[0], geom.n_inside):
        raise ValueError("previous must be (K, V) for K weights")
    return _TVPrior.apply(volume, geom, previous.to(torch.float32), weights.to(torch.float32),
                          eps, lam_s, lam_t)


class FusedDataTerm(DataTerm):
    """`DataTerm` whose J products run in the threaded `matvec` kernel."""

    def matvec(self, matrix: Tensor, x: Tensor) -> Tensor:
        return matvec(matrix, x)


class FusedTV4D(TV4D):
    """`TV4D` (eq. 11-13) in one C++ pass (`tv_prior`); `values` is read from the volume."""

    def __call__(self, volume: Tensor, values: Tensor, previous: Tensor,
                 weights: Tensor) -> Tensor:
        del values  # the kernel gathers the voxels inside the mask itself
        return tv_prior(volume, self.geom, previous, weights, self.eps, self.lam_s, self.lam_t)
