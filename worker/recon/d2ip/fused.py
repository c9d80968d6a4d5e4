"""Fused CPU kernels of 3D-FastResUNet's fast path (`kernels/*.cpp`), with autograd.

- `dwsep_unit`: `act(LN(PW(DW(x))) + res)`, the unit every block is built from (`Layout.unit`);
  the channels-last path runs it as six to eight PyTorch ops over the whole volume, the kernel
  as one pass forward and two backward.
- `upsample2`: the decoder's x2 trilinear upsampling (ATen's channels-last backward is slow).

The C++ sources have no Python or torch headers: they are compiled at first use with the system
C++ compiler (a few seconds) into `<cache dir>/kernels/`, keyed by a hash of the sources, the
flags, the compiler and the CPU, and loaded with ctypes. Without a compiler (or with
`EITMON_FUSED=0`) `available()` is False and the network keeps the channels-last path; the
two compute the same function (tested).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from worker.forward.cache import cache_dir

log = logging.getLogger(__name__)

SOURCES = (Path(__file__).with_name("kernels") / "dwsep_unit.cpp",
           Path(__file__).with_name("kernels") / "upsample2.cpp")
FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-std=c++17", "-shared", "-fPIC")
MAX_WIDTH = 512  # channel limit of the kernel's stack buffers (kMaxVec vectors of 8)

_P = ctypes.c_void_p
_I = ctypes.c_int
_F = ctypes.c_float


def _cpu_id() -> str:
    """The first CPU's model name and feature flags (what `-march=native` compiles for)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    first = {}
    for line in lines:
        key = line.split(":", 1)[0].strip()
        if key in ("model name", "flags", "Features") and key not in first:
            first[key] = line
    return "\n".join(first.values()) or platform.processor()


def _compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")


def library_path(compiler: str) -> Path:
    """Where the kernel library for this source, compiler, flags and CPU lives."""
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True,
                             check=True).stdout
    key = hashlib.sha256("\0".join([*(s.read_text() for s in SOURCES), " ".join(FLAGS), version,
                                    _cpu_id(), platform.machine()]).encode()).hexdigest()[:16]
    return cache_dir() / "kernels" / f"d2ip-{key}.so"


def build(compiler: str) -> Path:
    """Compile the kernel library unless it is already in the cache; returns its path."""
    target = library_path(compiler)
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / target.name
        subprocess.run([compiler, *FLAGS, *map(str, SOURCES), "-o", str(out)], check=True,
                       capture_output=True, text=True)
        os.replace(out, target)  # atomic: concurrent builders leave one complete file
    for stale in target.parent.glob("d2ip-*.so"):  # builds of other sources, flags or CPUs
        if stale != target:
            stale.unlink(missing_ok=True)
    return target


@functools.cache
def _library() -> ctypes.CDLL | None:
    if os.environ.get("EITMON_FUSED", "1") == "0":
        return None
    compiler = _compiler()
    if compiler is None:
        log.warning("no C++ compiler found: D2IP runs without its fused CPU kernels")
        return None
    try:
        lib = ctypes.CDLL(str(build(compiler)))
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        log.warning("fused D2IP kernels unavailable (%s): using the channels-last path",
                    detail.strip()[:500])
        return None
    lib.eitmon_dwsep_forward.argtypes = [_I] * 6 + [_P] * 9 + [_F, _I, _F] + [_P] * 5
    lib.eitmon_dwsep_forward.restype = None
    lib.eitmon_dwsep_backward.argtypes = [_I] * 6 + [_P] * 4 + [_F, _I] + [_P] * 16
    lib.eitmon_dwsep_backward.restype = None
    for name in ("eitmon_upsample2_forward", "eitmon_upsample2_backward"):
        getattr(lib, name).argtypes = [_I] * 7 + [_P] * 2
        getattr(lib, name).restype = None
    return lib


def available() -> bool:
    """True when the fused kernels are built and loaded (CPU only)."""
    return _library() is not None


def supports(cin: int, cout: int) -> bool:
    """Whether the kernels take these widths (multiples of 8, at most `MAX_WIDTH`)."""
    return all(0 < w <= MAX_WIDTH and w % 8 == 0 for w in (cin, cout))


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


class _DWSepUnit(torch.autograd.Function):
    """Outputs (unit, side): side = SW(x) when `sw` is given, else an empty tensor."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, dw: Tensor | None, pw: Tensor, pb: Tensor, lg: Tensor,
                lb: Tensor, res: Tensor | None, sw: Tensor | None, sb: Tensor | None,
                dilation: int, slope: float, act: bool, eps: float) -> tuple[Tensor, Tensor]:
        lib = _library()
        assert lib is not None
        x = x.detach().contiguous()
        p, r, c, ci = x.shape
        co = pw.shape[0]
        dw_c, pw_c, pb_c, lg_c, lb_c, res_c, sw_c, sb_c = (
            None if t is None else t.detach().contiguous()
            for t in (dw, pw, pb, lg, lb, res, sw, sb))
        out = x.new_empty((p, r, c, co))
        dsave = x.new_empty((p, r, c, ci)) if dw is not None else None  # DW output
        xhat = x.new_empty((p, r, c, co))
        rstd = x.new_empty((p, r, c))
        side = x.new_empty((p, r, c, co) if sw is not None else (0,))
        lib.eitmon_dwsep_forward(
            p, r, c, ci, co, dilation, *map(_ptr, (x, dw_c, pw_c, pb_c, lg_c, lb_c, res_c,
                                                   sw_c, sb_c)),
            slope, int(act), eps, *map(_ptr, (out, dsave, xhat, rstd, side if sw is not None
                                              else None)))
        ctx.save_for_backward(x, dw_c, pw_c, lg_c, sw_c, out, dsave, xhat, rstd)
        ctx.conf = (dilation, slope, act, res is not None)
        if sw is None:
            ctx.mark_non_differentiable(side)
        return out, side

    @staticmethod
    def backward(ctx: Any, grad: Tensor, gside: Tensor | None) -> tuple[Tensor | None, ...]:
        lib = _library()
        assert lib is not None
        x, dw, pw, lg, sw, out, dsave, xhat, rstd = ctx.saved_tensors
        dilation, slope, act, has_res = ctx.conf
        grad = grad.contiguous()
        p, r, c, ci = x.shape
        co = pw.shape[0]
        gx = torch.empty_like(x) if ctx.needs_input_grad[0] else None
        gdw = None if dw is None else torch.empty_like(dw)
        gpw = torch.empty_like(pw)
        gpb, glg, glb = (x.new_empty(co) for _ in range(3))
        gres = torch.empty_like(grad) if has_res and ctx.needs_input_grad[6] else None
        gsw = gsb = None
        if sw is not None:
            gside = torch.zeros_like(grad) if gside is None else gside.contiguous()
            gsw, gsb = torch.empty_like(sw), x.new_empty(co)
        lib.eitmon_dwsep_backward(
            p, r, c, ci, co, dilation, *map(_ptr, (x, dw, pw, lg)), slope, int(act),
            *map(_ptr, (out, dsave, xhat, rstd, grad, sw, gside if sw is not None else None,
                        gx, gdw, gpw, gpb, glg, glb, gres, gsw, gsb)))
        return gx, gdw, gpw, gpb, glg, glb, gres, gsw, gsb, None, None, None, None


def _check(x: Tensor, cout: int) -> None:
    if x.dtype != torch.float32 or x.device.type != "cpu":
        raise ValueError("fused kernels take float32 CPU tensors")
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
    return _DWSepUnit.apply(x, dw, _matrix(pw), pb, lg, lb, res, None, None, dilation, slope,
                            act, eps)[0]


def dwsep_unit_with_skip(x: Tensor, dw: Tensor | None, pw: Tensor, pb: Tensor, lg: Tensor,
                         lb: Tensor, sw: Tensor, sb: Tensor, dilation: int = 1,
                         slope: float = 0.2, eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    """(`dwsep_unit(x, ...)`, `x sw^T + sb`): the unit and a 1x1x1 conv of the same input (the
    ResConv3D block's shortcut, `sw` (CO, CI[, 1, 1, 1])) in one pass over x."""
    _check(x, pw.shape[0])
    if sw.shape[0] != pw.shape[0]:
        raise ValueError("the side conv must have the unit's output width")
    return _DWSepUnit.apply(x, dw, _matrix(pw), pb, lg, lb, None, _matrix(sw), sb, dilation,
                            slope, True, eps)


class _Upsample2(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, size: tuple[int, int, int]) -> Tensor:
        lib = _library()
        assert lib is not None
        x = x.detach().contiguous()
        out = x.new_empty((*size, x.shape[-1]))
        lib.eitmon_upsample2_forward(*x.shape, *size, _ptr(x), _ptr(out))
        ctx.in_shape = tuple(x.shape)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        lib = _library()
        assert lib is not None
        grad = grad.contiguous()
        gx = grad.new_empty(ctx.in_shape)
        lib.eitmon_upsample2_backward(*ctx.in_shape, *grad.shape[:3], _ptr(grad), _ptr(gx))
        return gx, None


def upsample2(x: Tensor, size: tuple[int, int, int]) -> Tensor:
    """`ops_cl.upsample2` (x2 trilinear, align_corners=False, cropped to `size`) in C++."""
    if x.dtype != torch.float32 or x.device.type != "cpu":
        raise ValueError("fused kernels take float32 CPU tensors")
    if any(not 2 * n - 1 <= m <= 2 * n for n, m in zip(x.shape[:3], size, strict=True)):
        raise ValueError(f"cannot crop x2 of {tuple(x.shape[:3])} to {tuple(size)}")
    return _Upsample2.apply(x, tuple(size))
