"""`eitmon bench tank`: TV, INR+TV and Diff-INR on the simulated shape tank (issue 18)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from worker.cli.bench_quality import _names


def tank(
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for tank.md, tank.json and "
                                                         "tank-<study>.png")],
    studies: Annotated[str, typer.Option(help="comma-separated: main, mesh, noise, alpha, "
                                              "lambda, t-range, slices, seeds, "
                                              "iterations, d2ip")] = "main",
    geometry: Annotated[str, typer.Option(help="cylinder geometry preset")] = "cylinder-1x32",
    protocol: Annotated[str, typer.Option(help="protocol preset")] = "skip4",
    grid: Annotated[tuple[int, int, int], typer.Option(help="P R C")] = (8, 32, 32),
    snr_db: Annotated[float, typer.Option(help="measurement SNR in dB")] = 50.0,
    seed: Annotated[int, typer.Option(help="noise seed")] = 0,
    threads: Annotated[int, typer.Option(min=1, help="torch threads")] = 1,
    runs: Annotated[str | None, typer.Option(help="comma-separated run labels to keep (as in "
                                                  "tank.md); default: every run")] = None,
    prior: Annotated[Path | None, typer.Option(help="Diff-INR prior weights (default: the "
                                                    "shipped ones)")] = None,
) -> None:
    """Simulate the tank once, reconstruct it in every run of the studies, score the electrode
    plane (SSIM, PSNR, RCR per inclusion), tabulate and draw."""
    from worker.bench.tank import STUDIES, TankSetup, benchmark

    study_list = _names(studies, STUDIES, "study(ies)")
    setup = TankSetup(geometry=geometry, protocol=protocol, grid=grid, snr_db=snr_db, seed=seed,
                      prior=str(prior) if prior else None)
    try:
        benchmark(study_list, setup, out, threads=threads,
                  labels=[r.strip() for r in runs.split(",")] if runs else None)
    except ValueError as err:
        typer.secho(f"error: {err}", fg="red", err=True)
        raise typer.Exit(2) from None
    typer.echo((out / "tank.md").read_text())
