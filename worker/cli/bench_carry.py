"""`eitmon bench carry`: an INR method carrying its weights across frames against cold starts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from worker.cli.bench_quality import _names


def carry(
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for carry.json")],
    method: Annotated[str, typer.Option(help="inr-tv or diff-inr")] = "inr-tv",
    case: Annotated[str, typer.Option(help="simulation case")] = "healthy-deep-breath",
    frames: Annotated[int, typer.Option(min=2, help="the last N frames of the case")] = 3,
    geometry: Annotated[str, typer.Option(help="geometry preset or file")] = "thorax-2x16",
    grid: Annotated[tuple[int, int, int], typer.Option(help="P R C")] = (16, 32, 32),
    threads: Annotated[int, typer.Option(min=1, help="torch threads")] = 1,
) -> None:
    """Reconstruct the case's last frames carrying the MLP from frame to frame and, on each
    frame after the first, from the initial network; print iterations, seconds and scores."""
    from worker.bench.carry import benchmark
    from worker.bench.quality import Setup
    from worker.simulation import CASES

    method_name = _names(method, ["inr-tv", "diff-inr"], "method")[0]
    case_name = _names(case, CASES, "case")[0]
    setup = Setup(frames=20, geometry=geometry, grid=list(grid))
    report = benchmark(case_name, method_name, frames, setup, out, threads=threads)
    typer.echo(json.dumps(report, indent=2))
