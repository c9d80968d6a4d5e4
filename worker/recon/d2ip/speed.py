"""Speed of one D2IP Adam iteration (forward + backward + step, incl. J product and both TVs).

Variants measured in the same run on the same network, problem and optimiser: the eager
reference path (`torch.nn` layers, NCDHW, plain J), the fast channels-last path with plain J and
with the range-compressed data term (`DataTerm`), and optionally the latter under
`torch.compile`. Repeats are interleaved so that load from other processes hits all
variants alike; figures are medians over repeats, after warm-up. Wall time and process CPU time
are both reported (CPU time is the steadier figure on a shared machine).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from worker.recon.d2ip.network import FastResUNet3D, NetConfig, count_parameters, make_input
from worker.recon.d2ip.objective import Objective
from worker.recon.d2ip.optimise import adam_iteration, make_optimizer
from worker.recon.d2ip.synthetic import make_problem


def _flops(objective: Objective, optimizer: torch.optim.Optimizer, dv: torch.Tensor) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        adam_iteration(objective, optimizer, dv)
    return int(counter.get_total_flops())


def run_speed_benchmark(grid: tuple[int, int, int] = (16, 32, 32), n_iter: int = 10,
                        repeats: int = 5, warmup: int = 3, n_meas: int = 928,
                        config: NetConfig | None = None, threads: int | None = 1,
                        compile: bool = False, seed: int = 0) -> dict[str, Any]:
    """ms per Adam iteration for eager reference vs fast (and compiled fast) paths, with ratios.

    `threads` sets `torch.set_num_threads` for the run (None: leave as is); the previous value
    is restored. FLOPs are counted by `FlopCounterMode` on the fast path (matmuls and
    convolutions only; it overcounts grouped-convolution weight gradients, so the reference path
    is not used for counting).
    """
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        problem = make_problem(grid, n_meas=n_meas, seed=seed)
        net = FastResUNet3D(config, seed=seed)
        z = make_input(seed, grid, net.config.in_channels)
        optimizer = make_optimizer(net)
        jac, mask = problem.jacobian, problem.mask
        objectives = {
            "eager_reference": Objective(net, z, jac, mask, fast=False, data_rtol=None),
            "fast_plain_j": Objective(net, z, jac, mask, fast=True, data_rtol=None),
            "fast": Objective(net, z, jac, mask, fast=True),
        }
        compile_s = None
        if compile:
            objectives["fast_compiled"] = Objective(net, z, jac, mask, fast=True, compile=True)
            t0 = time.perf_counter()
            adam_iteration(objectives["fast_compiled"], optimizer, problem.dv)
            compile_s = time.perf_counter() - t0
        for obj in objectives.values():
            for _ in range(warmup):
                adam_iteration(obj, optimizer, problem.dv)
        wall: dict[str, list[float]] = {k: [] for k in objectives}
        cpu: dict[str, list[float]] = {k: [] for k in objectives}
        for _ in range(repeats):
            for name, obj in objectives.items():
                w0, c0 = time.perf_counter(), time.process_time()
                for _ in range(n_iter):
                    adam_iteration(obj, optimizer, problem.dv)
                wall[name].append((time.perf_counter() - w0) / n_iter * 1e3)
                cpu[name].append((time.process_time() - c0) / n_iter * 1e3)
        flops = _flops(objectives["fast"], optimizer, problem.dv)
        threads_used = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)

    ms = {k: statistics.median(v) for k, v in wall.items()}
    cpu_ms = {k: statistics.median(v) for k, v in cpu.items()}
    ref = "eager_reference"
    return {
        "grid": list(grid),
        "n_meas": n_meas,
        "n_voxels": int(problem.mask.sum()),
        "threads": threads_used,
        "n_iter": n_iter,
        "repeats": repeats,
        "params": count_parameters(net),
        "data_rank": objectives["fast"].data.rank,
        "flops_per_iter": flops,
        "ms_per_iter": ms,
        "cpu_ms_per_iter": cpu_ms,
        "min_ms_per_iter": {k: min(v) for k, v in wall.items()},
        "speedup_vs_eager": {k: ms[ref] / v for k, v in ms.items() if k != ref},
        "cpu_speedup_vs_eager": {k: cpu_ms[ref] / v for k, v in cpu_ms.items() if k != ref},
        "gflops_per_s": {k: flops / (v * 1e-3) / 1e9 for k, v in ms.items() if k != ref},
        "compile_s": compile_s,
        "torch": torch.__version__,
    }
