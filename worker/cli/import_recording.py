"""`eitmon import FILE --format FORMAT --out REC.npz`: a device file into our recording format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from worker.reference import REFERENCE_HELP

_FILE = {"exists": True, "dir_okay": False, "readable": True}


def _fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(2)


def _grid(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        _fail(f"--grid: expected P,R,C, got {text!r}")


def import_recording(
    file: Annotated[Path, typer.Argument(help="device file", metavar="FILE", **_FILE)],
    fmt: Annotated[str, typer.Option("--format", help=(
        "file format: get (Göttingen Goe-MF II / Viasys); eit (any of the three .eit below, "
        "recognised by its header); draeger-eit (Dräger PulmoVista 500); swisstom-eit "
        "(Swisstom BB2 / Pioneer, LQ3/LQ4); carefusion-eit (CareFusion / Goe-MF II). Only "
        "get was checked on real files (docs/real-data.md). draeger-bin, sentec-zri and "
        "timpel-txt hold pixel images, not voltages, and are refused"))],
    out: Annotated[Path, typer.Option("--out", "-o", help="recording .npz to write",
                                      metavar="REC.npz")],
    rate: Annotated[float | None, typer.Option(
        help="frames per second (default: the file's time stamps, or the rate the file or its "
             ".prl sidecar states)")] = None,
    reference: Annotated[str, typer.Option(help=f"reference: {REFERENCE_HELP}")] = "mean",
    geometry: Annotated[str | None, typer.Option(
        help="geometry preset or spec file (default: thorax-1x32 for a 32-electrode file, "
             "else thorax-1x16)")] = None,
    grid: Annotated[str | None, typer.Option(help="voxel grid P,R,C (default 16,32,32)")]
    = None,
    electrodes: Annotated[str, typer.Option(
        help="device: put the device's electrodes where the format says they sit (the .get "
             "numbering runs the other way round); as-numbered: device electrode i on model "
             "electrode i")] = "device",
    attribution: Annotated[str | None, typer.Option(
        help="attribution the data's licence requires (known recordings carry theirs)")] = None,
    check: Annotated[bool, typer.Option(
        help="compare the reference with the model's homogeneous voltages (builds the model "
             "once; refuses a negative correlation)")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON summary")] = False,
) -> None:
    """Convert FILE into a recording (voltages, reference, frame times, protocol, provenance)
    and print its data-quality report."""
    from worker.devices.importer import import_recording as run_import
    from worker.recording import RecordingError

    if not out.parent.is_dir():
        _fail(f"--out: folder {out.parent} does not exist")
    try:
        imported = run_import(file, fmt, check=check, progress=not as_json, rate=rate,
                              reference=reference, geometry=geometry, grid=_grid(grid),
                              attribution=attribution, electrodes=electrodes)
    except (RecordingError, ValueError, TypeError, OSError) as exc:
        _fail(str(exc))
    rec, result = imported.recording, imported.check
    if result is not None and result.verdict == "refuse":
        _fail(f"{file.name}: {result.message}; not written")
    rec.save(out)
    meta = rec.meta
    if as_json:
        typer.echo(json.dumps({"out": str(out), "frames": rec.n_frames,
                               "measurements": rec.n_measurements,
                               "frame_rate": meta["frame_rate"],
                               "protocol_check": meta["protocol_check"],
                               "quality": meta["quality"], "source": meta["source"]}))
        return
    source = meta["source"]
    typer.echo(f"{file.name}: {source['device']}, {rec.n_frames} frames of "
               f"{rec.n_measurements} measurements at {meta['frame_rate']:g} frames/s "
               f"({source['stored']})")
    typer.echo(f"protocol: {meta['protocol_description']}")
    typer.echo(f"reference: {meta['reference']['spec']} (frames "
               f"{meta['reference']['frames'][0]}..{meta['reference']['frames'][1]})")
    if result is not None:
        typer.secho(f"model check: {result.message}",
                    fg="yellow" if result.verdict == "warn" else None,
                    err=result.verdict == "warn")
    typer.echo(imported.quality.table())
    if source["attribution"]:
        typer.echo(f"attribution: {source['attribution']}")
    typer.echo(f"wrote {out}")
