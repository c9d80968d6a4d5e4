"""The fused CPU kernels' library (`kernels/*.cpp`, `kernels/pool.h`): build, load, threads,
the pool's spin and the machine's runnable threads (docs/d2ip.md, "Speed under load").

The operations with autograd live in `fused_net.py` (the network's units, blocks, pooling and
upsampling) and `fused_loss.py` (the data term's J products, the TV prior).

The C++ sources have no Python or torch headers: they are compiled at first use with the system
C++ compiler into `<cache dir>/kernels/` (`worker.storage.write_atomic`), keyed by the content
key of the sources, the flags, the compiler and the CPU, and loaded with ctypes. Without a
compiler (or with `EITMON_FUSED=0`: `worker.settings.EngineSettings.fused`) `available()` is
False and `CpuExecution` keeps the channels-last path; the two compute the same function
(tested).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import math
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from worker.settings import EngineSettings
from worker.storage import cache_dir, content_key, write_atomic

log = logging.getLogger(__name__)

KERNELS = Path(__file__).with_name("kernels")
SOURCES = tuple(KERNELS / f for f in ("dwsep_unit.cpp", "upsample2.cpp", "maxpool2.cpp",
                                       "matvec.cpp", "tv.cpp"))
HEADERS = (KERNELS / "pool.h",)
FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-std=c++17", "-pthread", "-shared", "-fPIC")
MAX_WIDTH = 512  # channel limit of the kernel's stack buffers (kMaxVec vectors of 8)
MAX_THREADS = 8  # default cap: the grid's 16 planes are the unit of work
SPIN_US = 1000  # idle machine: the pool's threads spin this long before they sleep (pool.h)
LOADAVG = Path("/proc/loadavg")
STAT = Path("/proc/stat")
THREAD_SCHEDSTAT = Path("/proc/thread-self/schedstat")
SHARE_WINDOW_S = 0.25  # `ForegroundDemand`: the shortest interval it measures (25 clock ticks)

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
    key = content_key({"sources": [source.read_text() for source in SOURCES + HEADERS],
                       "flags": FLAGS, "compiler": version, "cpu": _cpu_id(),
                       "machine": platform.machine()}, length=16)
    return cache_dir() / "kernels" / f"d2ip-{key}.so"


def build(compiler: str) -> Path:
    """Compile the kernel library unless it is already in the cache; returns its path."""
    target = library_path(compiler)
    if target.exists():
        return target

    def compile_to(temporary: Path) -> None:
        subprocess.run([compiler, *FLAGS, *map(str, SOURCES), "-o", str(temporary)], check=True,
                       capture_output=True, text=True)

    write_atomic(target, compile_to)  # concurrent builders leave one complete file
    for stale in target.parent.glob("d2ip-*.so"):  # builds of other sources, flags or CPUs
        if stale != target:
            stale.unlink(missing_ok=True)
    return target


@functools.cache
def _library() -> ctypes.CDLL | None:
    if not EngineSettings().fused:
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
    lib.eitmon_set_spin.argtypes = [_I]
    lib.eitmon_set_spin.restype = None
    lib.eitmon_spin.argtypes = []
    lib.eitmon_spin.restype = _I
    lib.eitmon_awake_workers.argtypes = []
    lib.eitmon_awake_workers.restype = _I
    lib.eitmon_tv_prior.argtypes = ([_I] * 3 + [_P] * 5 + [ctypes.c_int64, _P, _I, _P, _P]
                                    + [_F] * 3 + [_P])
    lib.eitmon_tv_prior.restype = ctypes.c_double
    lib.eitmon_maxpool2_forward.argtypes = [_I] * 4 + [_P] * 3
    lib.eitmon_maxpool2_forward.restype = None
    lib.eitmon_maxpool2_backward.argtypes = [_I] * 4 + [_P] * 3
    lib.eitmon_maxpool2_backward.restype = None
    for name in ("eitmon_matvec", "eitmon_matvec_t", "eitmon_matvec_t_half"):
        getattr(lib, name).argtypes = [_I] * 2 + [_P] * 3
        getattr(lib, name).restype = None
    lib.eitmon_half_to_float.argtypes = [ctypes.c_uint16]
    lib.eitmon_half_to_float.restype = _F
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
    torch ops around them are not. Results do not depend on it."""
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


_spin: int | None = None  # set_spin; None: `_spin_tuned`
_spin_tuned = SPIN_US  # tune_spin(): what a ThreadTuner chose for the machine's load


def set_spin(microseconds: int | None) -> int | None:
    """How long the pool's threads spin before they sleep (None: automatic, see `spin`);
    returns the previous setting. Results do not depend on it."""
    global _spin
    if microseconds is not None and microseconds < 0:
        raise ValueError("spin must be at least 0 microseconds")
    before, _spin = _spin, microseconds
    return before


def tune_spin(microseconds: int) -> None:
    """The automatic spin (a `ThreadTuner` sets 0 on a busy machine, `SPIN_US` on an idle
    one); a spin set with `set_spin` takes precedence."""
    global _spin_tuned
    _spin_tuned = max(0, int(microseconds))


def spin() -> int:
    """The pool's spin in microseconds: as set (`set_spin`), else as tuned (`tune_spin`)."""
    return _spin if _spin is not None else _spin_tuned


def runnable(path: Path = LOADAVG) -> int | None:
    """Threads runnable on the machine right now, the caller included (the fourth field of
    /proc/loadavg, 'running/total'); None where unknown (not Linux)."""
    try:
        return int(path.read_text().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return None


def _own_cpu_seconds() -> float:
    """User and system CPU seconds of this process, all its threads."""
    t = os.times()
    return t.user + t.system


class ForegroundDemand:
    """How many threads of other processes at normal priority (nice 0 or less) want a CPU,
    estimated over the last `window_s` or more; None where unknown. `runnable()` counts a
    runnable nice-19 job like any other, though the scheduler gives it about 1.5 % of a core
    beside a nice-0 thread; the `ThreadTuner` takes the smaller of the two estimates.

    A thread at normal priority that wants a CPU gets the same share of one as the calling
    thread does while it is runnable, s = run / (run + wait) (/proc/thread-self/schedstat). The
    others' CPU time at normal priority over the interval, u (/proc/stat: `user` + `system` +
    `irq` + `softirq`, less this process's own time; `nice` holds every process with nice > 0),
    is then u / s such threads. Calls within `window_s` of the last measured one return the last
    estimate, so that a reading spans at least 25 clock ticks. None (the count alone decides)
    until the first interval is measured, where the files are unreadable, and whenever this
    process runs niced itself (its own time then lands in `nice`, beside the jobs it would
    have to be told apart from)."""

    def __init__(self, stat: Path = STAT, thread: Path = THREAD_SCHEDSTAT,
                 own: Callable[[], float] = _own_cpu_seconds, window_s: float = SHARE_WINDOW_S,
                 clock: Callable[[], float] = time.monotonic,
                 own_nice: Callable[[], int] = lambda: os.getpriority(os.PRIO_PROCESS, 0)
                 ) -> None:
        self.stat, self.thread, self.own, self.own_nice = stat, thread, own, own_nice
        self.window_s, self.clock = window_s, clock
        self.tick = 1.0 / os.sysconf("SC_CLK_TCK")
        self.demand: float | None = None
        self.last = self._read()

    def _read(self) -> tuple[float, float, float, float, float] | None:
        """(time, others' and own normal-priority CPU s, this thread's run and wait s)."""
        try:
            fields = self.stat.read_text().split("\n", 1)[0].split()
            user, _nice, system, _idle, _iowait, irq, softirq = map(int, fields[1:8])
            run_ns, wait_ns = map(int, self.thread.read_text().split()[:2])
        except (OSError, ValueError):
            return None
        return (self.clock(), (user + system + irq + softirq) * self.tick, self.own(),
                run_ns * 1e-9, wait_ns * 1e-9)

    def __call__(self) -> float | None:
        if self.own_nice() > 0:
            return None
        if self.last is not None and self.clock() - self.last[0] < self.window_s:
            return self.demand
        now = self._read()
        if now is None or self.last is None:
            self.last = now
            return None
        d = [b - a for a, b in zip(self.last, now, strict=True)]
        self.last = now
        elapsed, normal, own, run, wait = d
        if run + wait > 0.1 * elapsed:  # this thread wanted a CPU often enough to tell its share
            share = run / (run + wait)
            self.demand = max(0.0, normal - own) / elapsed / share
        return self.demand


def awake_workers() -> int:
    """The pool's worker threads that are not asleep (spinning, working, or runnable and
    waiting for a CPU): this process's own share of `runnable()` besides the caller. 0 without
    the kernels."""
    lib = _library()
    return 0 if lib is None else int(lib.eitmon_awake_workers())


def free_cpus(others: float) -> int:
    """Kernel threads worth starting when `others` threads of other processes want a CPU: the
    machine's CPUs less those others, at most the CPUs this process may use
    (`default_threads`), at least 1."""
    free = math.floor((os.cpu_count() or 1) - others + 0.5)
    return max(1, min(default_threads(), free))


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
        kernels()


def kernels() -> ctypes.CDLL:
    """The loaded library, its thread pool sized to `threads()` and spinning `spin()` (also
    after a fork)."""
    lib = _library()
    assert lib is not None
    n, us = threads(), spin()
    if lib.eitmon_threads() != n:
        lib.eitmon_set_threads(n)
    if lib.eitmon_spin() != us:
        lib.eitmon_set_spin(us)
    return lib


def require_cpu_float32(t: Tensor, what: str, ndim: int | None = None) -> None:
    """ValueError unless `t` is a float32 CPU tensor (with `ndim` dimensions): what the kernels
    read through raw pointers."""
    if t.dtype != torch.float32 or t.device.type != "cpu" or ndim not in (None, t.ndim):
        dims = f" with {ndim} dimensions" if ndim is not None else ""
        raise ValueError(f"{what} takes float32 CPU tensors{dims}")


def ptr(t: Tensor | None) -> int | None:
    """A tensor's data pointer for a kernel argument (None: a null pointer)."""
    return None if t is None else t.data_ptr()
