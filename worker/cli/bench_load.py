"""`eitmon bench load`: D2IP's fused CPU path under competing CPU load, old vs new policy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from worker.cli.output import output_file


def load(
    out: Annotated[Path | None, typer.Option(help="write the figures as JSON here")] = None,
    grid: Annotated[tuple[int, int, int], typer.Option(help="P R C")] = (16, 32, 32),
    busy: Annotated[list[int] | None, typer.Option(
        help="competing busy processes per level, the first the baseline (repeat)")] = None,
    n_iter: Annotated[int, typer.Option(min=1, help="iterations per timed repeat")] = 10,
    repeats: Annotated[int, typer.Option(min=1, help="interleaved repeats (median)")] = 3,
    warmup: Annotated[int, typer.Option(
        min=8, help="untimed iterations per policy and level (the tuner's probe)")] = 10,
    nice: Annotated[int, typer.Option(
        min=0, max=19, help="nice level of the busy processes (19: background jobs)")] = 0,
) -> None:
    """ms per fused D2IP Adam iteration with 0, 2 and 4 busy processes started alongside:
    the old policy (spinning threads, every CPU) against the new one (following the load),
    interleaved; slowdowns against the first level beside the CPU share lost."""
    output_file(out)
    from rich.console import Console
    from rich.table import Table

    from worker.bench.load import POLICIES, run_load_benchmark

    console = Console()
    result = run_load_benchmark(grid=grid, loads=tuple(busy or (0, 2, 4)), n_iter=n_iter,
                                repeats=repeats, warmup=warmup, nice=nice,
                                progress=lambda msg: console.print(f"[dim]{msg}[/dim]"))
    table = Table(title=f"fused D2IP Adam iteration under load (busy processes at nice {nice}), "
                        f"grid {'x'.join(map(str, grid))}"
                        f" (V = {result['n_voxels']}), {result['cpus']} CPUs; medians of "
                        f"{repeats} interleaved repeats of {n_iter}")
    for title in ("busy", "others", "policy", "ms", "CPU ms", "CPUs", "threads", "spin µs",
                  "slowdown", "share lost", "excess", "old/new"):
        table.add_column(title, justify="right")
    table.caption = ("others: runnable threads of other processes (mean before each repeat); "
                     "CPUs: CPU ms / ms; slowdown and share lost: vs the first level, same "
                     "policy; excess = slowdown / share lost (goal: at most 1); load averages: "
                     + ", ".join(f"{level['loadavg'][0]:.1f}"
                                 for level in result["levels"].values()))
    for level in result["levels"].values():
        for policy in POLICIES:
            others = level["others_runnable"]
            table.add_row(str(level["busy_processes"]),
                          "?" if others is None else f"{others:.1f}", policy,
                          f"{level['ms_per_iter'][policy]:.1f}",
                          f"{level['cpu_ms_per_iter'][policy]:.1f}",
                          f"{level['cpu_share'][policy]:.2f}",
                          str(level["kernel_threads"][policy]), str(level["spin_us"][policy]),
                          f"{level['slowdown'][policy]:.2f}x",
                          f"{level['share_lost'][policy]:.2f}x",
                          f"{level['excess'][policy]:.2f}",
                          f"{level['new_vs_old']:.2f}x" if policy == "new" else "")
    console.print(table)
    if out is not None:
        out.write_text(json.dumps(result, indent=2))
