"""`eitmon bench service`: ingest throughput and preview latency on loopback."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from worker.cli.output import output_file


def service(
    sessions: Annotated[int, typer.Option(help="concurrent sessions (beds)")] = 8,
    rate: Annotated[float, typer.Option(help="frames per second per session")] = 20.0,
    seconds: Annotated[float, typer.Option(help="latency phase duration")] = 20.0,
    ingest_seconds: Annotated[float, typer.Option(help="ingest phase duration")] = 5.0,
    batch: Annotated[int, typer.Option(help="frames per POST in the ingest phase")] = 32,
    method: Annotated[str, typer.Option(help="the sessions' main method")] = "tikhonov",
    grid: Annotated[tuple[int, int, int], typer.Option(help="P R C")] = (16, 32, 32),
    out: Annotated[Path | None, typer.Option(help="write the figures as JSON here")] = None,
) -> None:
    """Embedded valkey + API + one worker on loopback: frames accepted per second, and the
    latency from POST to the preview on the WebSocket at SESSIONS x RATE frames/s."""
    output_file(out)
    from rich.console import Console

    from worker.bench.service import Config, run

    console = Console(stderr=True)
    fig = run(Config(sessions=sessions, rate=rate, seconds=seconds,
                     ingest_seconds=ingest_seconds, batch=batch, method=method, grid=grid),
              progress=lambda msg: console.print(f"[dim]{msg}[/dim]"))
    pv, vol, hz = fig.preview_ms, fig.volume_ms, fig.healthz_ms
    console.print(f"ingest: {fig.ingest_frames_per_s:.0f} frames/s accepted "
                  f"({sessions} sessions, {batch} frames per POST); drained in "
                  f"{fig.drain_seconds:.1f} s, counters add up: {fig.counters_add_up}")
    if pv:
        console.print(f"preview latency at {sessions} x {rate:g} frames/s: p50 {pv['p50']:.1f} "
                      f"ms, p99 {pv['p99']:.1f} ms, max {pv['max']:.1f} ms "
                      f"({fig.previews_received:.0%} of frames previewed); baseline GET "
                      f"/healthz p50 {hz['p50']:.2f} ms (preview p50 = "
                      f"{pv['p50'] / hz['p50']:.0f}x)")
    if fig.preview_worker_ms:
        w = fig.preview_worker_ms
        console.print(f"  of which accepted -> preview published (worker): p50 {w['p50']:.1f} "
                      f"ms, p99 {w['p99']:.1f} ms")
    if vol:
        console.print(f"{method} volume latency: p50 {vol['p50']:.1f} ms, p99 {vol['p99']:.1f} "
                      f"ms (n={vol['n']:.0f})")
    console.print("CPU during the latency phase (% of one core): " + ", ".join(
        f"{k} {v:.0f}" for k, v in fig.cpu_percent.items()))
    console.print(f"load average after the run: {fig.load_average}; worker exit status "
                  f"{fig.worker_exit}")
    if out is not None:
        out.write_text(json.dumps(asdict(fig), indent=2))
