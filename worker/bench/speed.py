"""Speed of one D2IP Adam iteration (forward + backward + step, incl. J product and both TVs),
and of the streaming reconstructor on a real sequence (`run_sequence_benchmark`).

Variants measured in the same run on the same network, problem and optimiser: the eager
reference (`ReferenceExecution`: the network's plain-torch blocks, NCDHW, plain J), the
channels-last path (`CpuExecution(fused=False)`) with plain J and with the range-compressed
data term (`DataTerm`), and the fused kernels (`CpuExecution()`). Repeats are interleaved so
that load from other processes hits all variants alike; figures are medians over repeats, after
warm-up. Wall time and process CPU time are both reported (CPU time is the steadier figure on a
shared machine). Every variant's loss at the same parameters is reported too
(`loss_at_start`): the variants compute one function, so they agree to float32 rounding.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from worker.bench.synthetic import make_problem
from worker.recon.d2ip.cpu import CpuExecution, library
from worker.recon.d2ip.cpu.flat_adam import FlatAdam
from worker.recon.d2ip.execution import ReferenceExecution
from worker.recon.d2ip.network import FastResUNet3D, NetConfig, count_parameters, make_input
from worker.recon.d2ip.objective import Objective
from worker.recon.d2ip.optimise import LR_SIMULATED, Optimizer, adam_iteration

if TYPE_CHECKING:
    from worker.forward.model import ForwardModel


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """`torch.set_num_threads(threads)` for the block (None: leave as is), then restore."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def fused_threads(threads: int | None) -> Iterator[None]:
    """`library.set_threads(threads)` for the block (None: leave as is), then restore."""
    before = library.set_threads(threads) if threads is not None else None
    try:
        yield
    finally:
        if threads is not None:
            library.set_threads(before)


def _flops(objective: Objective, optimizer: Optimizer, dv: torch.Tensor) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        adam_iteration(objective, optimizer, dv)
    return int(counter.get_total_flops())


def run_speed_benchmark(grid: tuple[int, int, int] = (16, 32, 32), n_iter: int = 10,
                        repeats: int = 5, warmup: int = 3, n_meas: int = 928,
                        config: NetConfig | None = None, threads: int | None = 1, seed: int = 0,
                        kernel_threads: int | None = None) -> dict[str, Any]:
    """ms per Adam iteration for the eager reference vs the CPU's faster paths, with ratios.

    `threads` sets `torch.set_num_threads` for the run and `kernel_threads` the fused kernels'
    threads (None: leave as is; `fast_1_kernel_thread` is the fused path again with one kernel
    thread, when there are more); the previous values are restored. FLOPs are counted by
    `FlopCounterMode` on the channels-last path (matmuls and convolutions only; it overcounts
    grouped-convolution weight gradients, so the reference path is not used for counting).
    """
    with torch_threads(threads), fused_threads(kernel_threads):
        problem = make_problem(grid, n_meas=n_meas, seed=seed)
        net = FastResUNet3D(config, seed=seed)
        z = make_input(seed, grid, net.config.in_channels)
        optimizer = FlatAdam(net, LR_SIMULATED)
        jac, mask = problem.jacobian, problem.mask
        channels_last = CpuExecution(fused=False)
        objectives = {
            "eager_reference": ReferenceExecution().objective(net, z, jac, mask, data_rtol=None),
            "fast_plain_j": channels_last.objective(net, z, jac, mask, data_rtol=None),
            "channels_last": channels_last.objective(net, z, jac, mask),
        }
        one_thread: dict[str, int] = {}  # variants timed with one kernel thread
        if library.available():
            objectives["fast"] = CpuExecution(fused=True).objective(net, z, jac, mask)
            if library.threads() > 1:
                objectives["fast_1_kernel_thread"] = objectives["fast"]
                one_thread["fast_1_kernel_thread"] = 1
        else:
            objectives["fast"] = objectives.pop("channels_last")
        with torch.no_grad():
            loss_at_start = {name: float(obj(problem.dv).total)
                             for name, obj in objectives.items()}
        for name, obj in objectives.items():
            with fused_threads(one_thread.get(name)):
                for _ in range(warmup):
                    adam_iteration(obj, optimizer, problem.dv)
        wall: dict[str, list[float]] = {k: [] for k in objectives}
        cpu: dict[str, list[float]] = {k: [] for k in objectives}
        for _ in range(repeats):
            for name, obj in objectives.items():
                with fused_threads(one_thread.get(name)):
                    w0, c0 = time.perf_counter(), time.process_time()
                    for _ in range(n_iter):
                        adam_iteration(obj, optimizer, problem.dv)
                    wall[name].append((time.perf_counter() - w0) / n_iter * 1e3)
                    cpu[name].append((time.process_time() - c0) / n_iter * 1e3)
        # counted on the torch ops of the channels-last path: the fused kernels compute the
        # same function in ops FlopCounterMode does not see
        flops = _flops(objectives.get("channels_last", objectives["fast"]), optimizer,
                       problem.dv)
        threads_used = torch.get_num_threads()
        kernel_threads_used = library.threads()

    ms = {k: statistics.median(v) for k, v in wall.items()}
    cpu_ms = {k: statistics.median(v) for k, v in cpu.items()}
    ref = "eager_reference"
    return {
        "grid": list(grid),
        "n_meas": n_meas,
        "n_voxels": int(problem.mask.sum()),
        "threads": threads_used,
        "kernel_threads": kernel_threads_used,
        "n_iter": n_iter,
        "repeats": repeats,
        "params": count_parameters(net),
        "data_rank": objectives["fast"].data.rank,
        "flops_per_iter": flops,
        "loss_at_start": loss_at_start,
        "ms_per_iter": ms,
        "cpu_ms_per_iter": cpu_ms,
        "min_ms_per_iter": {k: min(v) for k, v in wall.items()},
        "speedup_vs_eager": {k: ms[ref] / v for k, v in ms.items() if k != ref},
        "cpu_speedup_vs_eager": {k: cpu_ms[ref] / v for k, v in cpu_ms.items() if k != ref},
        "gflops_per_s": {k: flops / (v * 1e-3) / 1e9 for k, v in ms.items() if k != ref},
        "fused_kernels": library.available(),
        "torch": torch.__version__,
    }


def run_sequence_benchmark(model: ForwardModel, dvs: np.ndarray, device: str = "cpu",
                           threads: int | None = 1, warm_start_dir: str | Path | None = None,
                           options: dict[str, Any] | None = None,
                           kernel_threads: int | None = None) -> dict[str, Any]:
    """Iterations and seconds per frame of `d2ip` on a real sequence, paper vs adaptive schedule.

    Both schedules start from the same warm start (UPWS, eq. 6; taken from the store, else run
    on the first frame and timed separately), then push `dvs` (T, M) frame by frame; frame 1
    starts from the warm start (450 iterations in the paper's schedule), later frames from the
    previous one (TPP, 250). Returns per schedule the iterations, seconds and final loss (eq. 14)
    per frame and the volumes, and the UPWS seconds when it ran here. `threads`,
    `kernel_threads`: as in `run_speed_benchmark`.
    """
    from worker.recon.base import create

    with torch_threads(threads), fused_threads(kernel_threads):
        chosen: list[int] = []  # the thread tuners' choices
        runs: dict[str, Any] = {}
        upws_s = None
        for schedule in ("paper", "adaptive"):
            recon = create("d2ip", model, device=device, schedule=schedule,
                           warm_start_dir=warm_start_dir, **(options or {}))
            t0 = time.perf_counter()
            recon.ensure_warm_start(dvs[0])
            if recon.upws_runs:
                upws_s = time.perf_counter() - t0
            frames = recon.push_many(dvs)
            tuner = getattr(recon.execution, "tuner", None)
            if tuner is not None:
                chosen += tuner.choices
            runs[schedule] = {
                "iterations": [f.iterations for f in frames],
                "seconds": [f.milliseconds / 1e3 for f in frames],
                "loss": [f.loss for f in frames],
                "ms_per_iteration": 1e3 * sum(f.milliseconds / 1e3 for f in frames)
                / sum(f.iterations for f in frames),
                "volumes": np.stack([f.volume for f in frames]),
                "settings": recon.settings,
            }
        threads_used, kernel_threads_used = torch.get_num_threads(), library.threads()
    return {"grid": list(model.grid.shape), "n_voxels": model.n_voxels,
            "n_meas": model.n_measurements, "frames": len(dvs), "threads": threads_used,
            "kernel_threads": kernel_threads_used,
            "kernel_threads_chosen": chosen,
            "device": device, "upws_seconds": upws_s, "runs": runs, "torch": torch.__version__}
