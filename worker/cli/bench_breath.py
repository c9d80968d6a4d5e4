"""`eitmon bench breath`: breath-synchronous D2IP on `tidal-breathing` (issue 15 §1 goal)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def breath(
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for breath.json and "
                                                         "breath.md")],
    duration: Annotated[float, typer.Option(min=20.0, help="seconds of recording (20 frames/s)")]
    = 190.0,
    method: Annotated[str, typer.Option(help="main method")] = "d2ip",
    option: Annotated[list[str] | None, typer.Option(
        help="main-method option KEY=VALUE, e.g. schedule=adaptive (repeat)",
        metavar="KEY=VALUE")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto")] = "cpu",
    threads: Annotated[int, typer.Option(min=1, help="torch threads (the worker's default)")]
    = 1,
) -> None:
    """Per breath: the main method's tidal image's delay after end-inspiration, iterations and
    MSSIM / CC / ERR against the truth's tidal image, next to Tikhonov's; default grid.

    The recording is played through the worker's breath scheduling on a virtual clock advanced
    by the real wall time of each step (`worker/bench/breath.py`).
    """
    import torch

    from worker.bench.breath import BreathBench, benchmark
    from worker.cli.reconstruct import parse_options

    torch.set_num_threads(threads)
    bench = BreathBench(duration_s=duration, method=method,
                        options=parse_options(option or []))
    report = benchmark(bench, out, device, log=typer.echo)
    typer.echo((out / "breath.md").read_text())
    typer.echo(f"{report['date']}: wrote {out / 'breath.json'} and {out / 'breath.md'}")
