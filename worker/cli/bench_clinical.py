"""`eitmon bench clinical`: are the clinician's numbers right? Ventilation parameters of each
method's tidal images against the truth's (docs/ventilation.md, "Clinical accuracy")."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from worker.cli.bench_quality import _names


def clinical(
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for clinical.md, "
                                                         "clinical.json and tidal-<case>.png")],
    methods: Annotated[str, typer.Option(help="comma-separated registered methods (rsip, "
                                              "the D2IP variants: slower per breath)")]
    = "tikhonov,tv,d2ip,edip",
    cases: Annotated[str, typer.Option(help="comma-separated: tidal-breathing, edema-left")]
    = "tidal-breathing,edema-left",
    duration: Annotated[float, typer.Option(min=10.0, help="seconds of tidal-breathing "
                                                          "(20 frames/s)")] = 180.0,
    snr_db: Annotated[float, typer.Option(help="measurement SNR in dB")] = 50.0,
    seed: Annotated[int, typer.Option(help="noise and breath-variation seed")] = 0,
    geometry: Annotated[str, typer.Option(help="geometry preset or file")] = "thorax-2x16",
    grid: Annotated[tuple[int, int, int], typer.Option(help="P R C")] = (16, 32, 32),
    position: Annotated[str, typer.Option(help="patient position (gravity): supine, prone, "
                                               "left-lateral, right-lateral, upright")]
    = "supine",
    device: Annotated[str, typer.Option(help="cpu or cuda (for torch methods)")] = "cpu",
    threads: Annotated[int, typer.Option(min=1, help="torch threads")] = 1,
) -> None:
    """Simulate, find breaths on the Tikhonov preview, reconstruct each breath's tidal
    difference with every method, and compare the ventilation parameters with the truth's."""
    from worker.bench.clinical import CASES, ClinicalSetup, benchmark
    from worker.recon.base import available_methods
    from worker.ventilation.regional import GRAVITY

    method_list = _names(methods, available_methods(), "method(s)")
    case_list = _names(cases, CASES, "case(s)")
    if position not in GRAVITY:
        raise typer.BadParameter(f"unknown {position!r}; known: {', '.join(GRAVITY)}",
                                 param_hint="--position")
    setup = ClinicalSetup(duration_s=duration, snr_db=snr_db, seed=seed, geometry=geometry,
                          grid=list(grid), position=position)
    report = benchmark(method_list, case_list, setup, out, device=device, progress=True,
                       threads=threads)
    _print(report)
    typer.echo(f"wrote {out / 'clinical.md'}, {out / 'clinical.json'} and "
               f"{', '.join(f'tidal-{c}.png' for c in case_list)}")


def _print(report: dict[str, Any]) -> None:
    from worker.bench.clinical import case_table, goal_lines, markdown_table

    for name, case in report["cases"].items():
        typer.echo(f"\n{name}: absolute error against the truth (percentage points)")
        typer.echo("\n".join(markdown_table(*case_table(case))))
    if report.get("goal"):
        typer.echo("\n" + "\n".join(goal_lines(report["goal"])))
