"""Speed of D2IP's fused CPU path on a busy machine (`eitmon bench load`, issue 17 §3).

For each competing load k (busy processes this benchmark starts: `python -c "while True:
pass"`), whole Adam iterations of the fused path (as `bench.speed`: network, fused data term and
TV prior, `FlatAdam`, on the synthetic problem) are timed under two policies, interleaved
repeat by repeat so that the machine's other load hits both alike:

- `old`: what the kernels ran before load was followed, once their tuner had chosen every CPU
  (as it does on an idle machine, and then keeps for 500 iterations whatever load comes): every
  CPU the process may use (`library.default_threads`), threads spinning `library.SPIN_US`
  before they sleep;
- `new`: the `ThreadTuner` following the machine's runnable threads (spin 0 and only the free
  CPUs as candidates when others wait for a CPU), its own per load level, warmed up (its
  probes) before timing.

Both run on the same pool (pool.h: a job ends when its items are done), so the comparison is of
the policies.

The bound. "Time per iteration grows at most in proportion to the CPU share taken away": the
share is measured, not modelled (the kernel's autogroups and nice levels decide it, and the
other engineers' jobs come and go): per policy and level, `cpu_share` = process CPU time /
wall time (CPUs). With `share_lost` = cpu_share at the first level / cpu_share at this one, the
goal reads slowdown ≤ share_lost, i.e. `excess` = slowdown / share_lost (= CPU ms per
iteration here / at the first level) ≤ 1: the work per iteration does not grow with the load.
Spinning threads and threads waiting for a descheduled peer show as CPU time without progress.
Before every timed repeat the benchmark also reads the machine's runnable threads
(`library.runnable`, less its own reading thread): `others_runnable`, the background.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import torch

from worker.bench.speed import torch_threads
from worker.bench.synthetic import make_problem
from worker.recon.d2ip.cpu import CpuExecution, library
from worker.recon.d2ip.cpu.flat_adam import FlatAdam
from worker.recon.d2ip.cpu.thread_tuner import ThreadTuner
from worker.recon.d2ip.network import FastResUNet3D, make_input
from worker.recon.d2ip.optimise import LR_SIMULATED, adam_iteration

POLICIES = ("old", "new")
BUSY = "while True: pass"
SETTLE_S = 1.0  # after starting the busy processes, before timing


@contextmanager
def busy_processes(count: int, nice: int = 0) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`count` processes that each keep a CPU busy, at `nice` above this process's nice level,
    ended (by their ids) on exit."""
    procs = [subprocess.Popen([sys.executable, "-c", BUSY], preexec_fn=lambda: os.nice(nice))
             for _ in range(count)]
    try:
        time.sleep(SETTLE_S if procs else 0.0)
        yield procs
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait()


@contextmanager
def policy(name: str) -> Iterator[None]:
    """`old`: every allowed CPU, spinning; `new`: automatic (the tuner decides). Restores the
    library's settings on exit."""
    fixed = (library.default_threads(), library.SPIN_US) if name == "old" else (None, None)
    before = library.set_threads(fixed[0]), library.set_spin(fixed[1])
    try:
        yield
    finally:
        library.set_threads(before[0])
        library.set_spin(before[1])


def _hook(tuner: ThreadTuner | None) -> AbstractContextManager[None]:
    return tuner.iteration() if tuner is not None else nullcontext()


def _others() -> float | None:
    now = library.runnable()
    return None if now is None else max(0.0, now - 1.0)


def run_load_benchmark(grid: tuple[int, int, int] = (16, 32, 32),
                       loads: tuple[int, ...] = (0, 2, 4), n_iter: int = 10, repeats: int = 3,
                       warmup: int = 10, seed: int = 0, progress: Any = None, nice: int = 0
                       ) -> dict[str, Any]:
    """ms per fused Adam iteration under each policy at each competing load (module docstring),
    the busy processes at `nice` (19: background jobs, which the tuner should leave the CPUs to
    this process: `library.ForegroundDemand`).

    `progress(description)`, when given, is called before every timed repeat."""
    if not library.available():
        raise RuntimeError("the fused CPU kernels are not available (no C++ compiler?)")
    if warmup < 8:
        raise ValueError("warmup must cover the tuner's first probe (8 iterations)")
    cpus = os.cpu_count() or 1
    with torch_threads(1):
        problem = make_problem(grid, seed=seed)
        net = FastResUNet3D(seed=seed)
        z = make_input(seed, grid, net.config.in_channels)
        optimizer = FlatAdam(net, LR_SIMULATED)
        objective = CpuExecution(fused=True).objective(net, z, problem.jacobian, problem.mask)
        levels: dict[str, Any] = {}
        for k in loads:
            with busy_processes(k, nice):
                tuners = {"old": None, "new": ThreadTuner()}
                for name, tuner in tuners.items():
                    with policy(name):
                        for _ in range(warmup):
                            with _hook(tuner):
                                adam_iteration(objective, optimizer, problem.dv)
                wall: dict[str, list[float]] = {p: [] for p in POLICIES}
                cpu: dict[str, list[float]] = {p: [] for p in POLICIES}
                others: list[float] = []
                threads: dict[str, list[int]] = {p: [] for p in POLICIES}
                spins: dict[str, list[int]] = {p: [] for p in POLICIES}
                for r in range(repeats):
                    for name, tuner in tuners.items():
                        if progress is not None:
                            progress(f"load {k}, {name}, repeat {r + 1}/{repeats}")
                        seen = _others()
                        if seen is not None:
                            others.append(seen)
                        with policy(name):
                            w0, c0 = time.perf_counter(), time.process_time()
                            for _ in range(n_iter):
                                with _hook(tuner):
                                    adam_iteration(objective, optimizer, problem.dv)
                                    threads[name].append(library.threads())
                                    spins[name].append(library.spin())
                            wall[name].append((time.perf_counter() - w0) / n_iter * 1e3)
                            cpu[name].append((time.process_time() - c0) / n_iter * 1e3)
                levels[str(k)] = {
                    "busy_processes": k,
                    "others_runnable": statistics.mean(others) if others else None,
                    "loadavg": os.getloadavg(),
                    "ms_per_iter": {p: statistics.median(v) for p, v in wall.items()},
                    "cpu_ms_per_iter": {p: statistics.median(v) for p, v in cpu.items()},
                    "kernel_threads": {p: statistics.mode(v) for p, v in threads.items()},
                    "spin_us": {p: statistics.mode(v) for p, v in spins.items()},
                }
    for level in levels.values():
        level["cpu_share"] = {p: level["cpu_ms_per_iter"][p] / level["ms_per_iter"][p]
                              for p in POLICIES}
    base = levels[str(loads[0])]
    for level in levels.values():
        level["slowdown"] = {p: level["ms_per_iter"][p] / base["ms_per_iter"][p]
                             for p in POLICIES}
        level["share_lost"] = {p: base["cpu_share"][p] / level["cpu_share"][p]
                               for p in POLICIES}
        level["excess"] = {p: level["slowdown"][p] / level["share_lost"][p] for p in POLICIES}
        level["new_vs_old"] = level["ms_per_iter"]["old"] / level["ms_per_iter"]["new"]
    return {"grid": list(grid), "n_voxels": int(problem.mask.sum()), "cpus": cpus,
            "cpus_allowed": library.default_threads(), "n_iter": n_iter, "repeats": repeats,
            "warmup": warmup, "loads": list(loads), "busy_nice": nice, "levels": levels,
            "torch": torch.__version__}
