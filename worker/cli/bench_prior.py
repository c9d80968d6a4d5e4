"""`eitmon bench prior`: SDS with the shipped diffusion prior on degraded held-out shapes, by
time-step sub-range (docs/diff-inr-prior.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from worker.cli.output import output_file


def prior(
    out: Annotated[Path | None, typer.Option(help="write the figures as JSON here")] = None,
    count: Annotated[int, typer.Option(min=1, help="held-out images")] = 32,
    steps: Annotated[int, typer.Option(min=1, help="Adam steps on the SDS loss")] = 30,
    lr: Annotated[float, typer.Option(help="Adam learning rate")] = 0.02,
) -> None:
    """SSIM/PSNR of blurred, noisy shapes before and after SDS descent, per t/T range."""
    output_file(out)
    from rich.console import Console
    from rich.table import Table

    from worker.bench.prior import t_range_study
    from worker.recon.diffinr.sds import SDSPrior

    result = t_range_study(SDSPrior.load_default(), count=count, steps=steps, lr=lr)
    table = Table("t/T range", "SSIM", "PSNR dB")
    table.add_row("degraded (start)", f"{result['degraded']['ssim']:.3f}",
                  f"{result['degraded']['psnr']:.2f}")
    for row in result["sds"]:
        lo, hi = row["t_range"]
        table.add_row(f"SDS [{lo:.2f}, {hi:.2f})", f"{row['ssim']:.3f}", f"{row['psnr']:.2f}")
    Console().print(table)
    if out is not None:
        out.write_text(json.dumps(result, indent=2))
