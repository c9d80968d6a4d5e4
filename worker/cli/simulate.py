"""`eitmon simulate CASE --out FILE.npz`: simulated breathing recordings."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from worker.cli.output import output_file


def simulate(
    case: Annotated[str, typer.Argument(help="healthy-deep-breath | edema-left | tidal-breathing | "
                                                 "tank-shapes (cylinder geometries)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="recording .npz to write")],
    snr_db: Annotated[float, typer.Option(help="measurement SNR in dB; inf for noiseless")] = 50.0,
    frames: Annotated[int | None, typer.Option(help="number of frames (default per case)")] = None,
    duration: Annotated[float, typer.Option(help="seconds (tidal-breathing)")] = 60.0,
    seed: Annotated[int, typer.Option(help="noise and breath-variation seed")] = 0,
    geometry: Annotated[str, typer.Option(help="geometry preset or file")] = "thorax-2x16",
    protocol: Annotated[str, typer.Option(help="protocol preset or file")] = "skip4",
    grid: Annotated[tuple[int, int, int], typer.Option(help="P R C")] = (16, 32, 32),
    truth: Annotated[bool, typer.Option(help="store the voxel truth")] = True,
) -> None:
    """Simulate a breathing thorax (or the shape tank) on a fine mesh and write a recording."""
    from worker.simulation import CASES
    from worker.simulation import simulate as run

    if case not in CASES:
        raise typer.BadParameter(f"unknown case {case!r}; cases: {', '.join(CASES)}",
                                 param_hint="CASE")
    output_file(out)
    t0 = time.perf_counter()
    try:
        rec = run(case, snr_db=None if snr_db == float("inf") else snr_db, frames=frames,
                  duration=duration, seed=seed, geometry=geometry, protocol=protocol, grid=grid,
                  with_truth=truth, progress=True)
    except ValueError as err:
        typer.secho(f"error: {err}", fg="red", err=True)
        raise typer.Exit(2) from None
    rec.save(out)
    typer.echo(json.dumps({"case": case, "out": str(out), "frames": rec.n_frames,
                           "n_measurements": rec.n_measurements,
                           "seconds": round(time.perf_counter() - t0, 1)}))
