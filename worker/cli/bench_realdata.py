"""`eitmon bench realdata`: the real recordings' tidal images by method, and plausibility
checks (docs/real-data.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from worker.cli.bench_quality import _names


def realdata(
    out: Annotated[Path, typer.Option("--out", "-o",
                                      help="folder for realdata.json and realdata.png")],
    data: Annotated[Path, typer.Option(help="folder holding the recordings' subfolders",
                                       exists=True, file_okay=False)] = Path("../shared/realdata"),
    recordings: Annotated[str, typer.Option(help="comma-separated: neonate, child")]
    = "neonate,child",
    geometry: Annotated[str, typer.Option(help="model geometry preset or file, or 'patient': "
                                               "each recording's thorax from its patient "
                                               "data and the Göttingen belt")]
    = "patient",
    exclude: Annotated[int, typer.Option(min=1, help="electrode (model numbering) excluded in "
                                                     "the exclusion check")] = 4,
    tv_breaths: Annotated[int, typer.Option(min=1, help="breaths TV reconstructs")] = 4,
    d2ip_breaths: Annotated[int, typer.Option(min=0, help="breaths whose tidal differences D2IP "
                                                          "reconstructs (0: no D2IP)")] = 8,
    d2ip_option: Annotated[list[str] | None, typer.Option(
        help="D2IP option KEY=VALUE (repeat; default data=real)", metavar="KEY=VALUE")] = None,
) -> None:
    """Reconstruct both real files with Tikhonov, GREIT, TV and D2IP; tidal images and
    checks."""
    import json

    from worker.bench.realdata import RECORDINGS, benchmark
    from worker.cli.reconstruct import parse_options

    chosen = _names(recordings, [e.name for e in RECORDINGS], "recording(s)")
    report = benchmark(data, out, geometry=geometry, exclude=exclude - 1,
                       tv_breaths=tv_breaths, d2ip_breaths=d2ip_breaths,
                       d2ip_options=parse_options(d2ip_option) if d2ip_option else None,
                       names=tuple(chosen), progress=True)
    typer.echo(json.dumps(report["recordings"], indent=2))
    typer.echo(f"wrote {out / 'realdata.json'} and {out / 'realdata.png'}")
