"""`eitmon bench realtime`: `d2ip-live` at the belt's frame rate (issue 17 §2 goals)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def realtime(
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for realtime.json, "
                                                         "realtime.md and realtime.png")],
    duration: Annotated[float, typer.Option(min=5.0, max=190.0,
                                            help="seconds of tidal-breathing (20 frames/s)")]
    = 120.0,
    sessions: Annotated[list[int] | None, typer.Option(
        help="sessions on one worker for the starvation runs (repeat; default 2, 4, 8)")]
    = None,
    starved: Annotated[float, typer.Option(min=1.0, help="seconds of each starvation run")]
    = 30.0,
    budget: Annotated[list[int] | None, typer.Option(
        help="fine-tuning steps per frame of the load-independent runs (repeat; default 0, 1, "
             "3, 10)")] = None,
    case: Annotated[list[str] | None, typer.Option(
        help="cases (repeat; default tidal-breathing, healthy-deep-breath, edema-left)")] = None,
    option: Annotated[list[str] | None, typer.Option(
        help="d2ip-live option KEY=VALUE, e.g. lr=1e-4 (repeat)", metavar="KEY=VALUE")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto")] = "cpu",
    threads: Annotated[int, typer.Option(min=1, help="torch and kernel threads")] = 1,
) -> None:
    """Frame latency (frame in, volume out) p50/p99, lag trend, MSSIM / CC / ERR per method on
    each case at its frame rate, default grid; `d2ip-live` against D2IP (paper schedule) under
    the same `realtime` scheduling, the Tikhonov preview, and the starved fine-tuning loop.

    The recordings are played on a virtual clock advanced by the real wall time of each step
    (`worker/bench/realtime.py`).
    """
    import torch

    from worker.bench.realtime import CASES, RealtimeBench, benchmark
    from worker.cli.reconstruct import parse_options
    from worker.recon.d2ip.cpu import library

    torch.set_num_threads(threads)
    library.set_threads(threads)
    bench = RealtimeBench(duration_s=duration, sessions=tuple(sessions or (2, 4, 8)),
                          starved_s=starved,
                          budget_steps=tuple((0, 1, 3, 10) if budget is None else budget),
                          cases=tuple(case or CASES),
                          live_options=parse_options(option or []))
    report = benchmark(bench, out, device, log=typer.echo, threads=threads)
    typer.echo((out / "realtime.md").read_text())
    typer.echo(f"{report['date']}: wrote realtime.json, realtime.md and realtime.png in {out}")
