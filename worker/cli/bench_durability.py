"""`eitmon bench durability`: no acknowledged frame lost across SIGKILLs of a worker, valkey
and the API."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer


def durability(
    out: Annotated[Path, typer.Option(help="folder for durability.md and durability.json")],
    sessions: Annotated[int, typer.Option(min=1, help="concurrent sessions (beds)")] = 4,
    rate: Annotated[float, typer.Option(min=0.1, help="frames per second per session")] = 20.0,
    seconds: Annotated[float, typer.Option(min=1.0, help="how long the belts post")] = 75.0,
    workers: Annotated[int, typer.Option(min=1, help="worker processes")] = 2,
    method: Annotated[str, typer.Option(help="the sessions' main method")] = "tikhonov",
    appendfsync: Annotated[str, typer.Option(
        help="valkey's AOF fsync: always (as deployed) | everysec")] = "always",
) -> None:
    """Belts post into SESSIONS sessions at RATE frames/s while the busiest worker (at 20 % of
    SECONDS), valkey (45 %, restarted from its append-only file) and the API (70 %) are killed
    with SIGKILL and restarted; then every acknowledged frame is looked for. Exits 1 if any was
    lost."""
    if appendfsync not in ("always", "everysec"):
        raise typer.BadParameter("always or everysec", param_hint="--appendfsync")
    out.mkdir(parents=True, exist_ok=True)  # before the run, so that its figures are kept
    from rich.console import Console

    from worker.bench.durability import Config, markdown, run

    console = Console(stderr=True)
    fig = run(Config(sessions=sessions, rate=rate, seconds=seconds, workers=workers,
                     method=method, appendfsync=appendfsync),
              progress=lambda msg: console.print(f"[dim]{msg}[/dim]"))
    report = markdown(fig)
    (out / "durability.md").write_text(report)
    (out / "durability.json").write_text(json.dumps(asdict(fig), indent=2))
    typer.echo(report)
    if fig.totals["lost"]:
        raise typer.Exit(1)
