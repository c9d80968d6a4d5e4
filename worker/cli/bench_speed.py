"""`eitmon bench speed`: ms per D2IP Adam iteration (vs the eager reference), and iterations and
seconds per frame of the streaming reconstructor on a simulated breath (paper vs adaptive)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from worker.cli.output import output_file

if TYPE_CHECKING:
    from worker.bench.quality import Setup


def speed(
    out: Annotated[Path | None, typer.Option(help="write the figures as JSON here")] = None,
    grid: Annotated[tuple[int, int, int], typer.Option(help="P R C")] = (16, 32, 32),
    n_iter: Annotated[int, typer.Option(min=1, help="iterations per timed repeat")] = 10,
    repeats: Annotated[int, typer.Option(min=1, help="interleaved repeats (median)")] = 5,
    warmup: Annotated[int, typer.Option(min=0, help="untimed iterations first")] = 3,
    threads: Annotated[int, typer.Option(min=1, help="torch threads")] = 1,
    kernel_threads: Annotated[int, typer.Option(
        min=0, help="threads of the fused CPU kernels (0: every CPU this process may use)")] = 0,
    case: Annotated[str, typer.Option(help="simulated case for the sequence")]
    = "healthy-deep-breath",
    sim_frames: Annotated[int, typer.Option(min=2, help="frames of the simulated case")] = 20,
    frames: Annotated[int, typer.Option(min=0, help="frames reconstructed (0: skip)")] = 4,
    geometry: Annotated[str, typer.Option(help="geometry preset or file (sequence)")]
    = "thorax-2x16",
    device: Annotated[str, typer.Option(help="cpu, cuda or auto")] = "cpu",
    option: Annotated[list[str] | None, typer.Option(
        help="d2ip option KEY=VALUE for the sequence, e.g. lam=0.01 (repeat)",
        metavar="KEY=VALUE")] = None,
) -> None:
    """D2IP speed: ms per Adam iteration, and iterations and seconds per frame.

    Times one Adam iteration on a synthetic problem (eager reference, fast path, ...), then
    reconstructs the first frames of a simulated breath with the paper's and the adaptive
    schedule (warm start from the store; UPWS timed apart when it has to run).
    """
    output_file(out)
    from rich.console import Console
    from rich.table import Table

    from worker.bench.quality import Setup
    from worker.bench.speed import run_speed_benchmark
    from worker.cli.reconstruct import parse_options

    console = Console()
    result: dict[str, Any] = {"iteration": run_speed_benchmark(
        grid=grid, n_iter=n_iter, repeats=repeats, warmup=warmup, threads=threads,
        kernel_threads=kernel_threads or None)}
    it = result["iteration"]
    table = Table(title=f"ms per Adam iteration, synthetic problem {'x'.join(map(str, grid))}, "
                        f"V = {it['n_voxels']}, {it['threads']} torch thread(s), "
                        f"{it['kernel_threads']} kernel thread(s)")
    for title in ("variant", "ms", "CPU ms", "vs eager reference"):
        table.add_column(title, justify="right")
    for name, ms in it["ms_per_iter"].items():
        ratio = it["speedup_vs_eager"].get(name, 1.0)
        table.add_row(name, f"{ms:.1f}", f"{it['cpu_ms_per_iter'][name]:.1f}", f"{ratio:.2f}x")
    table.caption = ("fast: channels-last path " + ("with" if it["fused_kernels"] else "without")
                     + " the fused C++ kernels")
    console.print(table)
    if frames:
        setup = Setup(frames=sim_frames, geometry=geometry, grid=list(grid))
        result["sequence"] = _sequence(case, setup, frames, device, (threads, kernel_threads),
                                       parse_options(option or []))
        console.print(_sequence_table(result["sequence"]))
    if out is not None:
        out.write_text(json.dumps(result, indent=2))


def _sequence(case: str, setup: Setup, frames: int, device: str, threads: tuple[int, int],
              options: dict[str, Any]) -> dict[str, Any]:
    """`run_sequence_benchmark` on the first `frames` frames of the case, scored vs truth;
    `threads`: torch's and the kernels' (0: every CPU)."""
    from worker.bench.quality import model_of, recording_for
    from worker.bench.speed import run_sequence_benchmark
    from worker.metrics import score
    from worker.recon.base import normalise

    rec = recording_for(case, setup, progress=True)
    dv = normalise(rec.voltages, rec.reference)[:frames]
    seq = run_sequence_benchmark(model_of(rec), dv, device=device, threads=threads[0],
                                 options=options, kernel_threads=threads[1] or None)
    seq["case"] = case
    for run in seq["runs"].values():
        volumes = run.pop("volumes")
        run["mean"] = score(volumes, rec.truth[:frames], rec.mask)["mean"]
    return seq


def _sequence_table(seq: dict[str, Any]) -> Any:
    from rich.table import Table

    upws = seq["upws_seconds"]
    chosen = seq["kernel_threads_chosen"]
    kernels = (f"kernel threads tuned: {' '.join(map(str, chosen))}" if chosen
               else f"{seq['kernel_threads']} kernel thread(s)")
    table = Table(title=f"d2ip on {seq['case']}, frames 1-{seq['frames']}, grid "
                        f"{'x'.join(map(str, seq['grid']))} (V = {seq['n_voxels']}), "
                        f"{seq['threads']} torch thread(s), {kernels}, "
                        f"{seq['device']}; UPWS "
                        + (f"ran here: {upws:.1f} s" if upws is not None else "from the store"))
    for title in ("schedule", "iterations per frame", "s per frame", "ms/iteration", "CC",
                  "MSSIM", "ERR"):
        table.add_column(title, justify="right")
    for name, run in seq["runs"].items():
        table.add_row(name, " ".join(map(str, run["iterations"])),
                      " ".join(f"{s:.1f}" for s in run["seconds"]),
                      f"{run['ms_per_iteration']:.1f}", f"{run['mean']['cc']:.3f}",
                      f"{run['mean']['mssim']:.3f}", f"{run['mean']['err']:.3f}")
    return table
