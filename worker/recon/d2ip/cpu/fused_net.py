"""The network's fused CPU operations with autograd (kernels `dwsep_unit.cpp`, `maxpool2.cpp`,
`upsample2.cpp`; library and threads in `library.py`).

- `dwsep_unit`: `act(LN(PW(DW(x))) + res)`, the unit every block is built from (`network.unit`);
  the channels-last path runs it as six to eight PyTorch ops over the whole volume, the kernel
  as one pass forward and two backward.
- `res_block`: a ResConv3D block (two units and the shortcut) as one autograd node.
- `aspp`: the ASPP bottleneck as one autograd node.
- `max_pool2`, `upsample2`: the encoder's pooling and the decoder's x2 trilinear upsampling.
- `squeeze_excite`, `decoder_input`: the SE unit, and a decoder stage's input (projected gate
  and attention-gated skip, upsampled and concatenated), each one autograd node with a
  hand-written backward (torch ops and the upsampling kernel inside).
"""

from __future__ import annotations

import ctypes
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from worker.recon.d2ip.cpu.library import MAX_WIDTH, kernels, ptr, require_cpu_float32, supports


class _Unit(NamedTuple):
    """One unit's parameters as the kernels take them (see `dwsep_unit`)."""

    dw: Tensor | None
    pw: Tensor  # (CO, CI)
    pb: Tensor
    lg: Tensor
    lb: Tensor


def _unit_forward(lib: ctypes.CDLL, x: Tensor, u: _Unit, res: Tensor | None,
                  side: tuple[Tensor, Tensor] | None, conf: tuple[int, float, bool, float]
                  ) -> tuple[Tensor, Tensor | None, tuple[Tensor | None, ...]]:
    """(unit output, side output or None, what the backward needs); conf = (dilation, slope,
    act, eps)."""
    dilation, slope, act, eps = conf
    u = _Unit(*(None if t is None else t.contiguous() for t in u))  # the kernels read raw memory
    if side is not None:
        side = (side[0].contiguous(), side[1].contiguous())
    p, r, c, ci = x.shape
    co = u.pw.shape[0]
    out = x.new_empty((p, r, c, co))
    dsave = x.new_empty((p, r, c, ci)) if u.dw is not None else None  # DW output
    xhat = x.new_empty((p, r, c, co))
    rstd = x.new_empty((p, r, c))
    sout = x.new_empty((p, r, c, co)) if side is not None else None
    sw, sb = side if side is not None else (None, None)
    lib.eitmon_dwsep_forward(p, r, c, ci, co, dilation,
                             *map(ptr, (x, u.dw, u.pw, u.pb, u.lg, u.lb, res, sw, sb)),
                             slope, int(act), eps, *map(ptr, (out, dsave, xhat, rstd, sout)))
    return out, sout, (x, u.dw, u.pw, u.lg, sw, out, dsave, xhat, rstd)


def _unit_backward(lib: ctypes.CDLL, saved: tuple[Tensor | None, ...],
                   conf: tuple[int, float, bool, float], grad: Tensor, gside: Tensor | None,
                   need_gx: bool, need_gres: bool) -> tuple[Tensor | None, ...]:
    """(gx, gdw, gpw, gpb, glg, glb, gres, gsw, gsb) of one unit; gx includes the side
    output's share (`gside`, when the unit has one)."""
    x, dw, pw, lg, sw, out, dsave, xhat, rstd = saved
    assert x is not None and pw is not None
    dilation, slope, act, _ = conf
    p, r, c, ci = x.shape
    co = pw.shape[0]
    grad = grad.contiguous()
    gx = torch.empty_like(x) if need_gx else None
    gdw = None if dw is None else torch.empty_like(dw)
    gpw = torch.empty_like(pw)
    gpb, glg, glb = (x.new_empty(co) for _ in range(3))
    gres = torch.empty_like(grad) if need_gres else None
    gsw = gsb = None
    if sw is not None:
        gside = torch.zeros_like(grad) if gside is None else gside.contiguous()
        gsw, gsb = torch.empty_like(sw), x.new_empty(co)
    lib.eitmon_dwsep_backward(
        p, r, c, ci, co, dilation, *map(ptr, (x, dw, pw, lg)), slope, int(act),
        *map(ptr, (out, dsave, xhat, rstd, grad, sw, gside if sw is not None else None,
                    gx, gdw, gpw, gpb, glg, glb, gres, gsw, gsb)))
    return gx, gdw, gpw, gpb, glg, glb, gres, gsw, gsb


class _DWSepUnit(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, dw: Tensor | None, pw: Tensor, pb: Tensor, lg: Tensor,
                lb: Tensor, res: Tensor | None, dilation: int, slope: float, act: bool,
                eps: float) -> Tensor:
        ctx.conf = (dilation, slope, act, eps)
        out, _, saved = _unit_forward(kernels(), x.contiguous(), _Unit(dw, pw, pb, lg, lb),
                                      None if res is None else res.contiguous(), None,
                                      ctx.conf)
        ctx.save_for_backward(*saved)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        gx, gdw, gpw, gpb, glg, glb, gres, _, _ = _unit_backward(
            kernels(), ctx.saved_tensors, ctx.conf, grad, None, ctx.needs_input_grad[0],
            ctx.needs_input_grad[6])
        return gx, gdw, gpw, gpb, glg, glb, gres, None, None, None, None


class _ResBlock(torch.autograd.Function):
    """unit2(unit1(x), res = side(x) or x): a ResConv3D block, one autograd node."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, dw1: Tensor, pw1: Tensor, pb1: Tensor, lg1: Tensor,
                lb1: Tensor, dw2: Tensor, pw2: Tensor, pb2: Tensor, lg2: Tensor, lb2: Tensor,
                sw: Tensor | None, sb: Tensor | None, slope: float, eps: float) -> Tensor:
        lib = kernels()
        x = x.contiguous()
        ctx.conf = (1, slope, True, eps)
        side = (sw, sb) if sw is not None and sb is not None else None
        h, s, saved1 = _unit_forward(lib, x, _Unit(dw1, pw1, pb1, lg1, lb1), None, side,
                                     ctx.conf)
        out, _, saved2 = _unit_forward(lib, h, _Unit(dw2, pw2, pb2, lg2, lb2),
                                       x if s is None else s, None, ctx.conf)
        ctx.save_for_backward(*saved1, *saved2)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        lib = kernels()
        saved = ctx.saved_tensors
        saved1, saved2 = saved[:9], saved[9:]
        has_side = saved1[4] is not None
        gh, gdw2, gpw2, gpb2, glg2, glb2, gres, _, _ = _unit_backward(
            lib, saved2, ctx.conf, grad, None, True, True)
        assert gh is not None and gres is not None
        gx, gdw1, gpw1, gpb1, glg1, glb1, _, gsw, gsb = _unit_backward(
            lib, saved1, ctx.conf, gh, gres if has_side else None, True, False)
        if not has_side:
            assert gx is not None
            gx.add_(gres)  # the identity shortcut
        return (gx, gdw1, gpw1, gpb1, glg1, glb1, gdw2, gpw2, gpb2, glg2, glb2, gsw, gsb, None,
                None)


def _check(x: Tensor, cout: int) -> None:
    require_cpu_float32(x, "the fused unit")
    if not supports(x.shape[-1], cout):
        raise ValueError(f"fused kernels take multiples of 8 channels up to {MAX_WIDTH}, "
                         f"got {x.shape[-1]} -> {cout}")


def _matrix(w: Tensor) -> Tensor:
    return w.reshape(w.shape[0], w.shape[1])


def dwsep_unit(x: Tensor, dw: Tensor | None, pw: Tensor, pb: Tensor, lg: Tensor, lb: Tensor,
               res: Tensor | None = None, dilation: int = 1, slope: float = 0.2,
               act: bool = True, eps: float = 1e-5) -> Tensor:
    """`act(LN(PW(DW(x))) + res)` on a channels-last (P, R, C, CI) float32 CPU tensor.

    `dw` is the depthwise Conv3d weight (CI, 1, 3, 3, 3), or None for no DW (`PW(x)`); `pw` the
    pointwise weight (CO, CI, 1, 1, 1) or (CO, CI), `pb` its bias, `lg`, `lb` the LayerNorm
    affine (CO,), `res` an optional (P, R, C, CO) residual; act is LeakyReLU(`slope`).
    """
    _check(x, pw.shape[0])
    return _DWSepUnit.apply(x, dw, _matrix(pw), pb, lg, lb, res, dilation, slope, act, eps)


def res_block(x: Tensor, unit1: tuple[Tensor, ...], unit2: tuple[Tensor, ...],
              shortcut: tuple[Tensor, Tensor] | None = None, slope: float = 0.2,
              eps: float = 1e-5) -> Tensor:
    """ResConv3D (paper Fig. 3): `unit2(unit1(x), res=shortcut(x))` with each unit `(dw, pw,
    pb, lg, lb)` as in `dwsep_unit` (dilation 1); `shortcut` is a 1x1x1 conv `(weight (CO, CI[,
    1, 1, 1]), bias)` of x, computed in unit 1's pass over x, or None for the identity (CI = CO).
    One autograd node: the kernels run four passes backward, no torch ops in between."""
    dw1, pw1, *rest1 = unit1
    dw2, pw2, *rest2 = unit2
    co = pw1.shape[0]
    _check(x, co)
    if pw2.shape[:2] != (co, co) or (shortcut is None and x.shape[-1] != co):
        raise ValueError("a ResConv3D block maps CI -> CO -> CO, with a shortcut when CI != CO")
    sw, sb = (None, None) if shortcut is None else (_matrix(shortcut[0]), shortcut[1])
    return _ResBlock.apply(x, dw1, _matrix(pw1), *rest1, dw2, _matrix(pw2), *rest2, sw, sb,
                           slope, eps)


class _ASPP(torch.autograd.Function):
    """ASPP (paper Fig. 3): branch units of x, the pooled branch, the fuse unit of their
    concatenation; one autograd node (the bottleneck has a handful of voxels, so its cost is
    the per-node overhead of a dozen small ops, not arithmetic)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, dilations: tuple[int, ...], slope: float, eps: float,
                pool_w: Tensor, pool_b: Tensor, *params: Tensor) -> Tensor:
        lib = kernels()
        x = x.contiguous()
        units = [_Unit(*params[5 * i:5 * i + 5]) for i in range(len(params) // 5)]
        branches, fuse = units[:-1], units[-1]
        feats, saved = [], []
        for u, d in zip(branches, dilations, strict=True):
            out, _, sv = _unit_forward(lib, x, u, None, None, (d, slope, True, eps))
            feats.append(out)
            saved.append(sv)
        mean = x.mean(dim=(0, 1, 2))
        q = torch.addmv(pool_b, pool_w, mean)
        feats.append(F.leaky_relu(q, slope).expand(*x.shape[:3], q.shape[0]))
        out, _, sv = _unit_forward(lib, torch.cat(feats, dim=-1), fuse, None, None,
                                   (1, slope, True, eps))
        saved.append(sv)
        ctx.conf = (dilations, slope, eps, len(saved[0]))
        ctx.save_for_backward(pool_w, mean, q, *(t for sv in saved for t in sv))
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        lib = kernels()
        dilations, slope, eps, n = ctx.conf
        pool_w, mean, q, *flat = ctx.saved_tensors
        saved = [tuple(flat[i:i + n]) for i in range(0, len(flat), n)]
        gcat, *g_fuse = _unit_backward(lib, saved[-1], (1, slope, True, eps), grad, None, True,
                                       False)[:6]
        assert gcat is not None
        co = q.shape[0]
        gx: Tensor | None = None
        g_branches: list[Tensor | None] = []
        for i, (sv, d) in enumerate(zip(saved[:-1], dilations, strict=True)):
            gxi, *g_unit = _unit_backward(lib, sv, (d, slope, True, eps),
                                          gcat[..., i * co:(i + 1) * co], None, True, False)[:6]
            assert gxi is not None
            gx = gxi if gx is None else gx.add_(gxi)
            g_branches += g_unit
        assert gx is not None
        # the pooled branch: leaky(W mean(x) + b), broadcast over the grid
        g_q = gcat[..., len(dilations) * co:].sum(dim=(0, 1, 2))
        g_q = torch.where(q > 0, g_q, g_q * slope)
        gx.add_((pool_w.T @ g_q) / (gx.shape[0] * gx.shape[1] * gx.shape[2]))
        return (gx, None, None, None, torch.outer(g_q, mean), g_q, *g_branches, *g_fuse)


def aspp(x: Tensor, branches: list[tuple[Tensor | None, ...]], dilations: tuple[int, ...],
         pool: tuple[Tensor, Tensor], fuse: tuple[Tensor | None, ...], slope: float = 0.2,
         eps: float = 1e-5) -> Tensor:
    """ASPP on a channels-last (P, R, C, CI) tensor: `dwsep_unit(x, *branch, dilation=d)` for
    each branch (`dw` None for the 1x1x1 one), `leaky(pool_w mean(x) + pool_b)` broadcast over
    the grid, and `dwsep_unit` (no DW) of their concatenation with the `fuse` parameters
    `(None, pw, pb, lg, lb)`."""
    co = branches[0][1].shape[0]
    _check(x, co)
    if not supports(len(branches) * co + co, co):
        raise ValueError("ASPP's concatenation must have a width the kernels take")
    params = [t for u in (*branches, fuse) for t in (u[0], _matrix(u[1]), *u[2:])]
    return _ASPP.apply(x, tuple(dilations), slope, eps, pool[0], pool[1], *params)


def _up_forward(lib: ctypes.CDLL, x: Tensor, size: tuple[int, int, int]) -> Tensor:
    x = x.contiguous()
    out = x.new_empty((*size, x.shape[-1]))
    lib.eitmon_upsample2_forward(*x.shape, *size, ptr(x), ptr(out))
    return out


def _up_backward(lib: ctypes.CDLL, grad: Tensor, in_shape: tuple[int, ...]) -> Tensor:
    grad = grad.contiguous()
    gx = grad.new_empty(in_shape)
    lib.eitmon_upsample2_backward(*in_shape, *grad.shape[:3], ptr(grad), ptr(gx))
    return gx


class _Upsample2(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, size: tuple[int, int, int]) -> Tensor:
        ctx.in_shape = tuple(x.shape)
        return _up_forward(kernels(), x, size)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return _up_backward(kernels(), grad, ctx.in_shape), None


class _SqueezeExcite(torch.autograd.Function):
    """x * sigmoid(W2 relu(W1 mean(x) + b1) + b2) per channel, one autograd node."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor) -> Tensor:
        mean = x.mean(dim=(0, 1, 2))
        h = torch.relu(torch.addmv(b1, w1, mean))
        s = torch.sigmoid(torch.addmv(b2, w2, h))
        ctx.save_for_backward(x, w1, w2, mean, h, s)
        return x * s

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, ...]:
        x, w1, w2, mean, h, s = ctx.saved_tensors
        g_z = (grad * x).sum(dim=(0, 1, 2)) * s * (1 - s)  # through the gate
        g_h = torch.where(h > 0, w2.T @ g_z, 0.0)
        g_mean = (w1.T @ g_h) / (x.shape[0] * x.shape[1] * x.shape[2])
        return (grad * s + g_mean, torch.outer(g_h, mean), g_h, torch.outer(g_z, h), g_z)


def squeeze_excite(x: Tensor, fc1: tuple[Tensor, Tensor], fc2: tuple[Tensor, Tensor]) -> Tensor:
    """The SE unit (Hu et al.) on a channels-last (P, R, C, Ch) tensor: `x * sigmoid(fc2(relu(
    fc1(mean(x)))))`, `fc1`, `fc2` (weight, bias) of the two linear layers; one autograd node."""
    return _SqueezeExcite.apply(x, *fc1, *fc2)


class _DecoderInput(torch.autograd.Function):
    """cat(up(project(g)), skip * up(sigmoid(psi(relu(theta ps + phi g))))), one autograd node:
    the projected gate and the attention gate (both at the coarse resolution of `ps`, the
    pooled skip, and `g`), upsampled x2 to the skip's grid, and their concatenation."""

    @staticmethod
    def forward(ctx: Any, g: Tensor, skip: Tensor, ps: Tensor, proj: Tensor, proj_b: Tensor,
                theta: Tensor, phi: Tensor, phi_b: Tensor, psi: Tensor, psi_b: Tensor) -> Tensor:
        lib = kernels()
        size = tuple(skip.shape[:3])
        g2, ps2 = g.reshape(-1, g.shape[-1]), ps.reshape(-1, ps.shape[-1])
        up = _up_forward(lib, torch.addmm(proj_b, g2, proj.T).reshape(*g.shape[:3], -1), size)
        q = torch.relu(torch.addmm(phi_b, g2, phi.T).addmm_(ps2, theta.T))
        a = torch.sigmoid(torch.addmm(psi_b, q, psi.T)).reshape(*ps.shape[:3], 1)
        a_up = _up_forward(lib, a, size)
        ctx.save_for_backward(g, skip, ps, proj, theta, phi, psi, q, a, a_up)
        return torch.cat([up, skip * a_up], dim=-1)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, ...]:
        lib = kernels()
        g, skip, ps, proj, theta, phi, psi, q, a, a_up = ctx.saved_tensors
        cs = skip.shape[-1]
        g_up, g_att = grad[..., :cs], grad[..., cs:]
        g2, ps2 = g.reshape(-1, g.shape[-1]), ps.reshape(-1, ps.shape[-1])
        g_proj = _up_backward(lib, g_up, (*g.shape[:3], cs)).reshape(-1, cs)
        g_a = _up_backward(lib, (g_att * skip).sum(dim=-1, keepdim=True), tuple(a.shape))
        g_z = (g_a * a * (1 - a)).reshape(-1, 1)  # through the sigmoid: (N, 1)
        g_q = torch.where(q > 0, g_z @ psi, 0.0)  # through the ReLU: (N, inter)
        g_g = (g_q @ phi).addmm_(g_proj, proj).reshape(g.shape)
        return (g_g, g_att * a_up, (g_q @ theta).reshape(ps.shape), g_proj.T @ g2,
                g_proj.sum(dim=0), g_q.T @ ps2, g_q.T @ g2, g_q.sum(dim=0), g_z.T @ q,
                g_z.sum(dim=0))


def decoder_input(gate: Tensor, skip: Tensor, pooled_skip: Tensor,
                  project: tuple[Tensor, Tensor], theta: Tensor, phi: tuple[Tensor, Tensor],
                  psi: tuple[Tensor, Tensor]) -> Tensor:
    """A decoder stage's input (`network.DecoderStage`) on channels-last tensors: the gate
    features projected by `project` and upsampled x2 to the skip's grid, concatenated with
    `skip` (P, R, C, Cs) gated by `sigmoid(psi(relu(theta(pooled_skip) + phi(gate))))` (the
    attention gate at the coarse grid, upsampled); 1x1x1 convs as (weight, bias), `theta`
    without bias. One autograd node."""
    require_cpu_float32(skip, "decoder_input")
    return _DecoderInput.apply(gate.contiguous(), skip.contiguous(), pooled_skip.contiguous(),
                               _matrix(project[0]), project[1], _matrix(theta),
                               _matrix(phi[0]), phi[1], _matrix(psi[0]), psi[1])


def upsample2(x: Tensor, size: tuple[int, int, int]) -> Tensor:
    """`channels_last_ops.upsample2` (x2 trilinear, align_corners=False, cropped to `size`)
    in C++."""
    require_cpu_float32(x, "upsample2")
    if any(not 2 * n - 1 <= m <= 2 * n for n, m in zip(x.shape[:3], size, strict=True)):
        raise ValueError(f"cannot crop x2 of {tuple(x.shape[:3])} to {tuple(size)}")
    return _Upsample2.apply(x, tuple(size))


class _MaxPool2(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        lib = kernels()
        x = x.contiguous()
        p, r, c, ch = x.shape
        shape = ((p + 1) // 2, (r + 1) // 2, (c + 1) // 2, ch)
        out = x.new_empty(shape)
        arg = torch.empty(shape, dtype=torch.int32)
        lib.eitmon_maxpool2_forward(p, r, c, ch, ptr(x), ptr(out), ptr(arg))
        ctx.save_for_backward(arg)
        ctx.in_shape = tuple(x.shape)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        lib = kernels()
        (arg,) = ctx.saved_tensors
        gx = grad.new_empty(ctx.in_shape)
        lib.eitmon_maxpool2_backward(*ctx.in_shape, ptr(grad.contiguous()), ptr(arg),
                                     ptr(gx))
        return gx


def max_pool2(x: Tensor) -> Tensor:
    """`channels_last_ops.max_pool2` (2x2x2, stride 2, ceil mode) of a channels-last float32
    CPU tensor in C++."""
    require_cpu_float32(x, "max_pool2", ndim=4)
    return _MaxPool2.apply(x)
