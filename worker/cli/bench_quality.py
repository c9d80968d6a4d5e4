"""`eitmon bench quality`: image quality and speed of the reconstruction methods on simulations."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer


def _names(text: str, known: list[str] | tuple[str, ...], what: str) -> list[str]:
    """'a,b' -> ['a', 'b'], each one of `known` (else exit 2 listing them)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if not names or unknown:
        typer.secho(f"error: unknown {what} {', '.join(unknown) or '(none given)'}; available: "
                    f"{', '.join(known)}", fg="red", err=True)
        raise typer.Exit(2)
    return names


def quality(
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for quality.md, quality.json "
                                                         "and slices-<case>.png")],
    methods: Annotated[str, typer.Option(help="comma-separated registered methods")]
    = "tikhonov,tv,rsip",
    cases: Annotated[str, typer.Option(help="comma-separated simulation cases")]
    = "healthy-deep-breath,edema-left",
    frames: Annotated[int, typer.Option(min=2, help="frames per case")] = 20,
    snr_db: Annotated[float, typer.Option(help="measurement SNR in dB")] = 50.0,
    seed: Annotated[int, typer.Option(help="noise seed")] = 0,
    geometry: Annotated[str, typer.Option(help="geometry preset or file")] = "thorax-2x16",
    grid: Annotated[tuple[int, int, int], typer.Option(help="P R C")] = (16, 32, 32),
    device: Annotated[str, typer.Option(help="cpu or cuda (for torch methods)")] = "cpu",
    throughput: Annotated[bool, typer.Option(help="measure Tikhonov frames/s")] = True,
    threads: Annotated[int, typer.Option(min=1, help="torch threads")] = 1,
    max_frames: Annotated[int | None, typer.Option(
        min=1, help="reconstruct and score only every k-th frame, ending at the last, at most "
                    "this many per case, for every method alike (for the slow inr-tv and "
                    "diff-inr); default: all frames")] = None,
) -> None:
    """Simulate the cases, reconstruct them with every method, score, tabulate and draw."""
    from worker.bench.quality import Setup, benchmark
    from worker.recon.base import available_methods
    from worker.simulation import CASES

    method_list = _names(methods, available_methods(), "method(s)")
    case_list = _names(cases, CASES, "case(s)")
    setup = Setup(frames=frames, snr_db=snr_db, seed=seed, geometry=geometry, grid=list(grid))
    report = benchmark(method_list, case_list, setup, out, device=device, throughput=throughput,
                       progress=True, threads=threads, max_frames=max_frames)
    _print(report)
    typer.echo(f"wrote {out / 'quality.md'}, {out / 'quality.json'} and "
               f"{', '.join(f'slices-{c}.png' for c in case_list)}")


def _print(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from worker.bench.quality import COLUMNS, capped_line, cells, throughput_line

    table = Table(title=f"Reconstruction quality ({report['date']}, "
                        f"{report['setup']['snr_db']} dB)")
    for _, title in COLUMNS:
        table.add_column(title, justify="right")
    for row in report["rows"]:
        table.add_row(*cells(row))
    console = Console()
    console.print(table)
    if report.get("max_frames") is not None:
        console.print(capped_line(report).strip())
    if "tikhonov_throughput" in report:
        console.print(throughput_line(report["tikhonov_throughput"]))
