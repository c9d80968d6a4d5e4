"""Fused CPU kernels for the depthwise-separable units of 3D-FastResUNet (`kernels/*.cpp`).

One unit is `act(LN(PW(DW(x))) + res)` (see `ResConv3d` and the ASPP branches in
`network.py`); the channels-last path runs it as six to eight PyTorch ops over the whole
volume, the fused kernel as one pass forward and two backward. The C++ source has no Python or
torch headers: it is compiled at first use with the system C++ compiler (about a second) into
`<cache dir>/kernels/`, keyed by a hash of the source, the flags, the compiler and the CPU, and
loaded with ctypes. Without a compiler (or with `EITMON_FUSED=0`) `available()` is False and the
network keeps the channels-last path; the two compute the same function (tested).
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

SOURCE = Path(__file__).with_name("kernels") / "dwsep_unit.cpp"
FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-std=c++17", "-shared", "-fPIC")
MAX_WIDTH = 256  # channel limit of the kernel's stack buffers (kMaxVec vectors of 8)

_P = ctypes.c_void_p
_I = ctypes.c_int
_F = ctypes.c_float


def _cpu_id() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "flags")):
                return line
    except OSError:
        pass
    return platform.processor()


def _compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")


def library_path(compiler: str) -> Path:
    """Where the kernel library for this source, compiler, flags and CPU lives."""
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True,
                             check=True).stdout
    key = hashlib.sha256("\0".join([SOURCE.read_text(), " ".join(FLAGS), version, _cpu_id(),
                                    platform.machine()]).encode()).hexdigest()[:16]
    return cache_dir() / "kernels" / f"dwsep_unit-{key}.so"


def build(compiler: str) -> Path:
    """Compile the kernel library unless it is already in the cache; returns its path."""
    target = library_path(compiler)
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / target.name
        subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", str(out)], check=True,
                       capture_output=True, text=True)
        os.replace(out, target)  # atomic: concurrent builders leave one complete file
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
    lib.eitmon_dwsep_forward.argtypes = [_I] * 6 + [_P] * 7 + [_F, _I, _F] + [_P] * 4
    lib.eitmon_dwsep_forward.restype = None
    lib.eitmon_dwsep_backward.argtypes = [_I] * 6 + [_P] * 4 + [_F, _I] + [_P] * 12
    lib.eitmon_dwsep_backward.restype = None
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
    @staticmethod
    def forward(ctx: Any, x: Tensor, dw: Tensor, pw: Tensor, pb: Tensor, lg: Tensor,
                lb: Tensor, res: Tensor | None, dilation: int, slope: float, act: bool,
                eps: float) -> Tensor:
        lib = _library()
        assert lib is not None
        x = x.contiguous()
        p, r, c, ci = x.shape
        co = pw.shape[0]
        params = [t.detach().contiguous() for t in (dw, pw, pb, lg, lb)]
        res_c = None if res is None else res.detach().contiguous()
        out = x.new_empty((p, r, c, co))
        dsave = x.new_empty((p, r, c, ci))
        xhat = x.new_empty((p, r, c, co))
        rstd = x.new_empty((p, r, c))
        lib.eitmon_dwsep_forward(p, r, c, ci, co, dilation, _ptr(x), *map(_ptr, params),
                                 _ptr(res_c), slope, int(act), eps, _ptr(out), _ptr(dsave),
                                 _ptr(xhat), _ptr(rstd))
        ctx.save_for_backward(x, params[0], params[1], params[3], out, dsave, xhat, rstd)
        ctx.conf = (dilation, slope, act, res is not None)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        lib = _library()
        assert lib is not None
        x, dw, pw, lg, out, dsave, xhat, rstd = ctx.saved_tensors
        dilation, slope, act, has_res = ctx.conf
        grad = grad.contiguous()
        p, r, c, ci = x.shape
        co = pw.shape[0]
        gx = torch.empty_like(x) if ctx.needs_input_grad[0] else None
        gdw, gpw = torch.empty_like(dw), torch.empty_like(pw)
        gpb, glg, glb = (x.new_empty(co) for _ in range(3))
        gres = torch.empty_like(grad) if has_res and ctx.needs_input_grad[6] else None
        lib.eitmon_dwsep_backward(p, r, c, ci, co, dilation, _ptr(x), _ptr(dw), _ptr(pw),
                                  _ptr(lg), slope, int(act), _ptr(out), _ptr(dsave),
                                  _ptr(xhat), _ptr(rstd), _ptr(grad), _ptr(gx), _ptr(gdw),
                                  _ptr(gpw), _ptr(gpb), _ptr(glg), _ptr(glb), _ptr(gres))
        return gx, gdw, gpw, gpb, glg, glb, gres, None, None, None, None


def dwsep_unit(x: Tensor, dw: Tensor, pw: Tensor, pb: Tensor, lg: Tensor, lb: Tensor,
               res: Tensor | None = None, dilation: int = 1, slope: float = 0.2,
               act: bool = True, eps: float = 1e-5) -> Tensor:
    """`act(LN(PW(DW(x))) + res)` on a channels-last (P, R, C, CI) float32 CPU tensor.

    `dw` is the depthwise Conv3d weight (CI, 1, 3, 3, 3), `pw` the pointwise weight (CO, CI, 1,
    1, 1) or (CO, CI), `pb` its bias, `lg`, `lb` the LayerNorm affine (CO,), `res` an optional
    (P, R, C, CO) residual; act is LeakyReLU(`slope`).
    """
    if x.dtype != torch.float32 or x.device.type != "cpu":
        raise ValueError("fused kernels take float32 CPU tensors")
    if not supports(x.shape[-1], pw.shape[0]):
        raise ValueError(f"fused kernels take multiples of 8 channels up to {MAX_WIDTH}, "
                         f"got {x.shape[-1]} -> {pw.shape[0]}")
    return _DWSepUnit.apply(x, dw, pw.reshape(pw.shape[0], pw.shape[1]), pb, lg, lb, res,
                            dilation, slope, act, eps)
