"""`eitmon model ...`: build and inspect forward models."""

from __future__ import annotations

import json
from typing import Annotated

import typer

app = typer.Typer(help="Forward models: mesh, complete electrode model, voxel Jacobian.",
                  no_args_is_help=True)


@app.command("build")
def build(
    geometry: Annotated[str, typer.Option(help="preset name or YAML/JSON file")] = "thorax-2x16",
    protocol: Annotated[str, typer.Option(help="preset name (skip4, adjacent, skipK) or file")]
    = "skip4",
    grid: Annotated[tuple[int, int, int], typer.Option(help="P R C")] = (16, 32, 32),
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
) -> None:
    """Build (or load from cache) a forward model and print its summary."""
    from worker.forward.model import load_model

    m = load_model(geometry=geometry, protocol=protocol, grid=grid, progress=not as_json)
    summary = m.summary()
    if as_json:
        typer.echo(json.dumps(summary))
        return
    for k, v in summary.items():
        typer.echo(f"{k:>18}: {v}")
