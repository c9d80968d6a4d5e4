"""`eitmon bench educated`: Educated DIP against D2IP and the seed's claims (issue 17 §1)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def educated(
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for educated.md, "
                                                         "educated.json and the figures")],
    cases: Annotated[str, typer.Option(help="comma-separated simulation cases")]
    = "healthy-deep-breath,edema-left",
    sweep: Annotated[str, typer.Option(help="comma-separated edip iterations per frame ('': "
                                            "none)")] = "10,25,50,100",
    paper: Annotated[bool, typer.Option(help="edip with the paper's schedule")] = True,
    d2ip: Annotated[bool, typer.Option(help="run d2ip (unless --d2ip-from has its row)")]
    = True,
    frames: Annotated[int, typer.Option(min=2, help="frames per case")] = 20,
    snr_db: Annotated[float, typer.Option(help="measurement SNR in dB")] = 50.0,
    seed: Annotated[int, typer.Option(help="noise seed")] = 0,
    curve: Annotated[bool, typer.Option(help="quality vs iteration on the first frame")] = True,
    curve_iterations: Annotated[int, typer.Option(min=1, help="iterations of the curve")] = 450,
    curve_every: Annotated[int, typer.Option(min=1, help="score the curve every N")] = 10,
    geometry: Annotated[str, typer.Option(help="geometry preset or file")] = "thorax-2x16",
    grid: Annotated[tuple[int, int, int], typer.Option(help="P R C")] = (16, 32, 32),
    threads: Annotated[int, typer.Option(min=1, help="torch threads")] = 1,
    d2ip_from: Annotated[list[Path] | None, typer.Option(
        help="quality.json of `bench quality --methods d2ip` on the same setup: its d2ip rows "
             "instead of rerunning d2ip (repeat)")] = None,
    option: Annotated[list[str] | None, typer.Option(
        help="method option KEY=VALUE for d2ip and edip (pretrain_*: edip only; repeat)",
        metavar="KEY=VALUE")] = None,
) -> None:
    """d2ip and edip (paper schedule), edip at fewer iterations a frame, the pretrained network
    alone and the preview: quality, and the iterations edip needs to reach D2IP's."""
    from worker.bench.educated import EducatedBench, benchmark, markdown
    from worker.bench.quality import Setup
    from worker.cli.bench_quality import _names
    from worker.cli.reconstruct import parse_options
    from worker.simulation import CASES

    case_list = _names(cases, CASES, "case(s)")
    try:
        counts = tuple(int(n) for n in sweep.split(",") if n.strip())
    except ValueError:
        counts = ()
    if (counts and min(counts) < 1) or (sweep.strip() and not counts):
        typer.secho(f"error: --sweep: positive integers, got {sweep!r}", fg="red", err=True)
        raise typer.Exit(2)
    bench = EducatedBench(cases=tuple(case_list), sweep=counts, curve=curve, paper=paper,
                          d2ip=d2ip, progress=True,
                          curve_iterations=curve_iterations, curve_every=curve_every,
                          options=parse_options(option or []),
                          d2ip_from=tuple(d2ip_from or ()))
    setup = Setup(frames=frames, snr_db=snr_db, seed=seed, geometry=geometry, grid=list(grid))
    report = benchmark(bench, setup, out, threads=threads)
    typer.echo(markdown(report))
    typer.echo(f"wrote {out / 'educated.md'}, {out / 'educated.json'} and the figures")
