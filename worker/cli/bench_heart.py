"""`eitmon bench heart`: the spectral evidence for a real recording's heart rate
(docs/real-data.md, "The child's heart rate")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from worker.cli.bench_quality import _names


def heart(
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for heart-evidence.png and "
                                                         "heart-evidence.json")],
    data: Annotated[Path, typer.Option(help="folder holding the recordings' subfolders",
                                       exists=True, file_okay=False)] = Path("../shared/realdata"),
    recording: Annotated[str, typer.Option(help="neonate or child")] = "child",
) -> None:
    """Periodograms of the global curve and of the channels against the stated heart and
    ventilator rates: where the cardiac line is, and what it is not."""
    from worker.bench.heart_evidence import run
    from worker.bench.realdata import RECORDINGS

    name = _names(recording, [e.name for e in RECORDINGS], "recording")[0]
    entry = next(e for e in RECORDINGS if e.name == name)
    try:
        report = run(entry, data, out)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--recording") from exc
    typer.echo(json.dumps(report, indent=2))
