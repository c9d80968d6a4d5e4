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
import math
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor

from worker.forward.cache import cache_dir
from worker.recon.d2ip.loss import MaskGeometry

log = logging.getLogger(__name__)

KERNELS = Path(__file__).with_name("kernels")
SOURCES = tuple(KERNELS / f for f in ("dwsep_unit.cpp", "upsample2.cpp", "maxpool2.cpp",
                                       "matvec.cpp", "tv.cpp"))
HEADERS = (KERNELS / "pool.h",)
FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-std=c++17", "-pthread", "-shared", "-fPIC")
MAX_WIDTH = 512  # channel limit of the kernel's stack buffers (kMaxVec vectors of 8)
MAX_THREADS = 8  # default cap: the grid's 16 planes are the unit of work

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
    key = hashlib.sha256("\0".join([*(s.read_text() for s in SOURCES + HEADERS), " ".join(FLAGS),
                                    version,
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
    lib.eitmon_set_threads.argtypes = [_I]
    lib.eitmon_set_threads.restype = None
    lib.eitmon_threads.argtypes = []
    lib.eitmon_threads.restype = _I
    lib.eitmon_tv_prior.argtypes = ([_I] * 3 + [_P] * 5 + [ctypes.c_int64, _P, _I, _P, _P]
                                    + [_F] * 3 + [_P])
    lib.eitmon_tv_prior.restype = ctypes.c_double
    lib.eitmon_maxpool2_forward.argtypes = [_I] * 4 + [_P] * 3
    lib.eitmon_maxpool2_forward.restype = None
    lib.eitmon_maxpool2_backward.argtypes = [_I] * 4 + [_P] * 3
    lib.eitmon_maxpool2_backward.restype = None
    for name in ("eitmon_matvec", "eitmon_matvec_t"):
        getattr(lib, name).argtypes = [_I] * 2 + [_P] * 3
        getattr(lib, name).restype = None
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


_threads: int | None = None  # set_threads; None: `_tuned`, else `default_threads()`
_tuned: int | None = None  # tune(): what a ThreadTuner measured to be fastest


def set_threads(threads: int | None) -> int | None:
    """Threads the kernels use, the caller included (None: automatic, see `threads`); returns
    the previous setting.

    Independent of torch's intra-op threads: the kernels are worth splitting, most of the small
    torch ops around them are not (see docs/d2ip.md). Results do not depend on it."""
    global _threads
    if threads is not None and threads < 1:
        raise ValueError("threads must be at least 1")
    before, _threads = _threads, threads
    return before


def tune(threads: int | None) -> None:
    """The automatic thread count (a `ThreadTuner`'s choice; None: `default_threads()`); a count
    set with `set_threads` takes precedence."""
    global _tuned
    if threads is not None and threads < 1:
        raise ValueError("threads must be at least 1")
    _tuned = threads


def threads() -> int:
    """The kernels' thread count: as set (`set_threads`), else as tuned (`tune`), else
    `default_threads()`."""
    if _threads is not None:
        return _threads
    return _tuned if _tuned is not None else default_threads()


def is_automatic() -> bool:
    """True unless `set_threads` fixed the thread count."""
    return _threads is None


@functools.cache
def default_threads() -> int:
    """The CPUs this process may run on (affinity, and a container's CPU quota), at most
    `MAX_THREADS`."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    quota = _cgroup_cpus()
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, min(cpus, MAX_THREADS))


def _cgroup_cpus(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs the cgroup's CFS quota allows (v2 `cpu.max`, v1 `cpu.cfs_quota_us`); None when
    unlimited or unknown. A Kubernetes CPU limit shows here, not in the affinity mask."""
    try:
        quota, period = (root / "cpu.max").read_text().split()
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        v1 = root / "cpu"
        quota_us = int((v1 / "cpu.cfs_quota_us").read_text())
        return None if quota_us <= 0 else quota_us / int((v1 / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None


def start_threads() -> None:
    """Start the kernels' worker threads now, from the calling thread, whose scheduling
    priority they inherit (they otherwise start at the first kernel call). No-op without the
    kernels."""
    if available():
        _kernels()


def _kernels() -> ctypes.CDLL:
    """The loaded library, its thread pool sized to `threads()` (also after a fork)."""
    lib = _library()
    assert lib is not None
    n = threads()
    if lib.eitmon_threads() != n:
        lib.eitmon_set_threads(n)
    return lib


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


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
    p, r, c, ci = x.shape
    co = u.pw.shape[0]
    out = x.new_empty((p, r, c, co))
    dsave = x.new_empty((p, r, c, ci)) if u.dw is not None else None  # DW output
    xhat = x.new_empty((p, r, c, co))
    rstd = x.new_empty((p, r, c))
    sout = x.new_empty((p, r, c, co)) if side is not None else None
    sw, sb = side if side is not None else (None, None)
    lib.eitmon_dwsep_forward(p, r, c, ci, co, dilation,
                             *map(_ptr, (x, u.dw, u.pw, u.pb, u.lg, u.lb, res, sw, sb)),
                             slope, int(act), eps, *map(_ptr, (out, dsave, xhat, rstd, sout)))
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
        p, r, c, ci, co, dilation, *map(_ptr, (x, dw, pw, lg)), slope, int(act),
        *map(_ptr, (out, dsave, xhat, rstd, grad, sw, gside if sw is not None else None,
                    gx, gdw, gpw, gpb, glg, glb, gres, gsw, gsb)))
    return gx, gdw, gpw, gpb, glg, glb, gres, gsw, gsb


class _DWSepUnit(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, dw: Tensor | None, pw: Tensor, pb: Tensor, lg: Tensor,
                lb: Tensor, res: Tensor | None, dilation: int, slope: float, act: bool,
                eps: float) -> Tensor:
        ctx.conf = (dilation, slope, act, eps)
        out, _, saved = _unit_forward(_kernels(), x.contiguous(), _Unit(dw, pw, pb, lg, lb),
                                      None if res is None else res.contiguous(), None,
                                      ctx.conf)
        ctx.save_for_backward(*saved)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        gx, gdw, gpw, gpb, glg, glb, gres, _, _ = _unit_backward(
            _kernels(), ctx.saved_tensors, ctx.conf, grad, None, ctx.needs_input_grad[0],
            ctx.needs_input_grad[6])
        return gx, gdw, gpw, gpb, glg, glb, gres, None, None, None, None


class _ResBlock(torch.autograd.Function):
    """unit2(unit1(x), res = side(x) or x): a ResConv3D block, one autograd node."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, dw1: Tensor, pw1: Tensor, pb1: Tensor, lg1: Tensor,
                lb1: Tensor, dw2: Tensor, pw2: Tensor, pb2: Tensor, lg2: Tensor, lb2: Tensor,
                sw: Tensor | None, sb: Tensor | None, slope: float, eps: float) -> Tensor:
        lib = _kernels()
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
        lib = _kernels()
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


class _Upsample2(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, size: tuple[int, int, int]) -> Tensor:
        lib = _kernels()
        x = x.detach().contiguous()
        out = x.new_empty((*size, x.shape[-1]))
        lib.eitmon_upsample2_forward(*x.shape, *size, _ptr(x), _ptr(out))
        ctx.in_shape = tuple(x.shape)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        lib = _kernels()
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


class _MaxPool2(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        lib = _kernels()
        x = x.contiguous()
        p, r, c, ch = x.shape
        shape = ((p + 1) // 2, (r + 1) // 2, (c + 1) // 2, ch)
        out = x.new_empty(shape)
        arg = torch.empty(shape, dtype=torch.int32)
        lib.eitmon_maxpool2_forward(p, r, c, ch, _ptr(x), _ptr(out), _ptr(arg))
        ctx.save_for_backward(arg)
        ctx.in_shape = tuple(x.shape)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        lib = _kernels()
        (arg,) = ctx.saved_tensors
        gx = grad.new_empty(ctx.in_shape)
        lib.eitmon_maxpool2_backward(*ctx.in_shape, _ptr(grad.contiguous()), _ptr(arg),
                                     _ptr(gx))
        return gx


def max_pool2(x: Tensor) -> Tensor:
    """`ops_cl.max_pool2` (2x2x2, stride 2, ceil mode) of a channels-last float32 CPU tensor in
    C++."""
    if x.dtype != torch.float32 or x.device.type != "cpu" or x.ndim != 4:
        raise ValueError("max_pool2 takes a float32 CPU (P, R, C, Ch) tensor")
    return _MaxPool2.apply(x)


class _MatVec(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, a: Tensor, x: Tensor) -> Tensor:
        lib = _kernels()
        x = x.detach().contiguous()
        y = x.new_empty(a.shape[0])
        lib.eitmon_matvec(*a.shape, _ptr(a), _ptr(x), _ptr(y))
        ctx.save_for_backward(a)
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, Tensor]:
        lib = _kernels()
        (a,) = ctx.saved_tensors
        gx = grad.new_empty(a.shape[1])
        lib.eitmon_matvec_t(*a.shape, _ptr(a), _ptr(grad.contiguous()), _ptr(gx))
        return None, gx


def matvec(a: Tensor, x: Tensor) -> Tensor:
    """`a @ x` for a constant contiguous (m, n) float32 CPU matrix and a vector x (n,), threaded
    (the data term's J product; no gradient for `a`)."""
    if a.dtype != torch.float32 or a.device.type != "cpu" or not a.is_contiguous():
        raise ValueError("matvec takes a contiguous float32 CPU matrix")
    if a.requires_grad:
        raise ValueError("matvec has no gradient for the matrix")
    return _MatVec.apply(a, x.to(torch.float32))


class _TVPrior(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, volume: Tensor, geom: MaskGeometry, previous: Tensor, weights: Tensor,
                eps: float, lam_s: float, lam_t: float) -> Tensor:
        lib = _kernels()
        volume = volume.contiguous()
        previous, weights = previous.contiguous(), weights.contiguous()
        grad = torch.empty_like(volume)
        value = lib.eitmon_tv_prior(
            *volume.shape, *map(_ptr, (volume, geom.inside, geom.pair_p, geom.pair_r,
                                       geom.pair_c)),
            geom.n_inside, _ptr(geom.index), previous.shape[0], _ptr(previous), _ptr(weights),
            eps, lam_s, lam_t, _ptr(grad))
        ctx.save_for_backward(grad)
        return volume.new_tensor(value)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:
        (grad,) = ctx.saved_tensors
        return grad * g, None, None, None, None, None, None


def tv_prior(volume: Tensor, geom: MaskGeometry, previous: Tensor, weights: Tensor, eps: float,
             lam_s: float, lam_t: float) -> Tensor:
    """`lam_s * loss.spatial_tv(volume, geom, eps) + lam_t * loss.temporal_tv(volume inside,
    previous, weights, eps)` (eq. 8 and 9) with its gradient, in one C++ pass."""
    if volume.dtype != torch.float32 or volume.device.type != "cpu" or volume.ndim != 3:
        raise ValueError("tv_prior takes a float32 CPU (P, R, C) volume")
    if previous.shape != (weights.shape[0], geom.n_inside):
        raise ValueError("previous must be (K, V) for K weights")
    return _TVPrior.apply(volume, geom, previous.to(torch.float32), weights.to(torch.float32),
                          eps, lam_s, lam_t)
