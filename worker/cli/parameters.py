"""`eitmon parameters FILE.npz`: per-breath ventilation parameters (docs/ventilation.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from worker.cli.output import output_file

_FILE = {"exists": True, "dir_okay": False, "readable": True}
_TIMING = (("start_s", "start s", ".2f"), ("end_inspiration_s", "insp. s", ".2f"),
           ("end_s", "end s", ".2f"), ("rate_per_min", "/min", ".1f"), ("tiv", "TIV", ".4g"),
           ("eeli", "EELI", ".3g"), ("delta_eeli", "ΔEELI", ".3g"),
           ("rvd_spread_pct", "RVDI %", ".1f"))
_REGIONAL = (("left_pct", "left %", ".1f"), ("dorsal_pct", "dors. %", ".1f"),
             ("cranial_pct", "cran. %", ".1f"), ("cov_x_pct", "CoVx %", ".1f"),
             ("cov_y_pct", "CoVy %", ".1f"), ("cov_z_pct", "CoVz %", ".1f"),
             ("gi", "GI", ".3f"), ("silent_dependent_pct", "DSS %", ".1f"),
             ("silent_nondependent_pct", "NSS %", ".1f"))


def _load(path: Path, frame_rate: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any, str,
                                                  list[str]]:
    """(volumes, body mask, frame times, geometry spec or None, label, notes) of a
    reconstruction or a recording's truth."""
    from worker.recording import Reconstruction, Recording, RecordingError

    notes: list[str] = []
    try:
        with np.load(path, allow_pickle=False) as npz:
            is_reconstruction = "volumes" in npz.files
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(f"{path}: not a readable .npz archive ({exc})",
                                 param_hint="FILE") from None
    try:
        if not is_reconstruction:
            rec = Recording.load(path)
            if rec.truth is None:
                raise RecordingError(f"{path}: truth: no ground truth in this recording "
                                     "(a real one?); reconstruct it first")
            return rec.truth, rec.mask, rec.frame_times, rec.meta["geometry"], "truth", notes
        recon = Reconstruction.load(path)
    except RecordingError as exc:
        raise typer.BadParameter(str(exc), param_hint="FILE") from None
    source = recon.meta.get("source")
    times, geometry = None, (recon.meta.get("model") or {}).get("geometry")
    if source and Path(source).is_file():
        try:
            rec = Recording.load(source)
            if rec.n_frames == recon.n_frames:
                times = rec.frame_times
                geometry = geometry if geometry is not None else rec.meta["geometry"]
        except RecordingError:
            pass
    if times is None:
        times = np.arange(recon.n_frames) / frame_rate
        notes.append(f"frame times: {frame_rate:g} frames/s (--frame-rate); the source "
                     "recording was not found")
    return recon.volumes, recon.mask, times, geometry, str(recon.meta["method"]), notes


def _space(geometry: Any, shape: tuple[int, int, int], notes: list[str]):
    """VoxelSpace and ring heights from the geometry spec (no mesh is built)."""
    from service.contract.geometry import resolve_geometry
    from worker.ventilation.space import VoxelSpace, geometry_space

    if geometry is None:
        notes.append("geometry unknown: voxels of 1 m, no electrode rings")
        return VoxelSpace.unit(shape), ()
    try:
        spec = resolve_geometry(geometry)
    except (TypeError, ValueError) as exc:
        raise typer.BadParameter(f"meta.geometry: {exc}", param_hint="FILE") from None
    return geometry_space(spec, shape)


def _baseline(text: str) -> str | float:
    if text in ("first", "reference"):
        return text
    try:
        return float(text)
    except ValueError:
        raise typer.BadParameter("expected first, reference or a number",
                                 param_hint="--baseline") from None


def parameters(
    file: Annotated[Path, typer.Argument(help="reconstruction .npz (eitmon reconstruct) or a "
                                              "simulated recording (its truth)",
                                         metavar="FILE.npz", **_FILE)],
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON document")] = False,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="write the parameters: "
                                             ".json (the --json document) or .csv (a row "
                                             "per breath)", metavar="FILE")] = None,
    nifti: Annotated[Path | None, typer.Option(help="folder for NIfTI volumes: tidal images, "
                                               "their mean, RVD, lung mask, impedance",
                                               metavar="DIR")] = None,
    fhir: Annotated[Path | None, typer.Option(help="write a FHIR R4 Observation bundle (JSON)",
                                              metavar="FILE")] = None,
    position: Annotated[str, typer.Option(help="patient position, sets gravity: supine, "
                                               "prone, left-lateral, right-lateral, upright")]
    = "supine",
    baseline: Annotated[str, typer.Option(help="ΔEELI baseline: first (breath), reference "
                                               "(the volumes' reference frame) or a number")]
    = "first",
    lung_fraction: Annotated[float, typer.Option(help="lung region: fraction of the largest "
                                                      "mean TIV")] = 0.15,
    heart_filter: Annotated[bool, typer.Option(help="filter the heart rate out (MDN)")] = True,
    frame_rate: Annotated[float, typer.Option(help="frames/s when a reconstruction's source "
                                                   "recording is missing")] = 20.0,
) -> None:
    """Breaths, TIV, EELI, regional distribution, CoV, GI, silent spaces and delay of FILE."""
    from worker.ventilation.export import export_nifti, fhir_bundle, to_json, write_csv
    from worker.ventilation.parameters import AnalysisSettings, analyse
    from worker.ventilation.regional import GRAVITY

    if position not in GRAVITY:
        raise typer.BadParameter(f"unknown {position!r}; known: {', '.join(GRAVITY)}",
                                 param_hint="--position")
    if not 0 < lung_fraction < 1:
        raise typer.BadParameter("expected 0 < fraction < 1", param_hint="--lung-fraction")
    if frame_rate <= 0:
        raise typer.BadParameter("expected a positive rate", param_hint="--frame-rate")
    if out is not None and out.suffix.lower() not in (".json", ".csv"):
        raise typer.BadParameter("expected a .json or .csv file", param_hint="--out")
    output_file(out)
    output_file(fhir, "--fhir")
    if nifti is not None:
        try:
            nifti.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise typer.BadParameter(f"cannot create folder {nifti}: {err.strerror}",
                                     param_hint="--nifti") from None
    settings = AnalysisSettings(position=position, eeli_baseline=_baseline(baseline),
                                lung_fraction=lung_fraction, heart_filter=heart_filter)
    volumes, mask, times, geometry, label, notes = _load(file, frame_rate)
    space, rings = _space(geometry, mask.shape, notes)
    analysis = analyse(volumes, times, mask, space, rings, settings)
    analysis.notes[:0] = notes
    document = to_json(analysis)
    if out is not None:
        if out.suffix.lower() == ".csv":
            write_csv(out, analysis)
        else:
            out.write_text(document)
    if fhir is not None:
        fhir.write_text(json.dumps(fhir_bundle(analysis)))
    if nifti is not None:
        export_nifti(nifti, analysis, space, volumes)
    if as_json:
        typer.echo(document)
        return
    _print(json.loads(document), f"{label}: {file.name}")


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _print(document: dict[str, Any], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    summary = document["summary"]
    for caption, columns in ((f"{title}: breaths", _TIMING), (f"{title}: regional", _REGIONAL)):
        table = Table(title=caption)
        table.add_column("#", justify="right")
        for _, header, _ in columns:
            table.add_column(header, justify="right")
        for row in document["breaths"]:
            table.add_row(str(row["index"]), *(_fmt(row[key], spec) for key, _, spec in columns))
        if document["breaths"]:
            table.add_section()
            table.add_row("mean", *("" if key not in summary["mean"] else
                                    _fmt(summary["mean"][key], spec)
                                    for key, _, spec in columns), style="bold")
        console.print(table)
    rate = summary["respiratory_rate_per_min"]
    heart = summary["heart_rate_per_min"]
    console.print(
        f"{summary['breaths']} breaths; respiratory rate "
        + (f"{rate:.1f}/min" if rate is not None else "-")
        + "; heart rate " + (f"{heart:.0f}/min" if heart is not None else "-")
        + (" (filtered out)" if summary["heart_filtered"] else "")
        + f"; lung region {summary['lung_voxels']} voxels; position {summary['position']}")
    console.print(f"TIV, EELI: {summary['units']['tiv']}; ΔEELI against "
                  f"{_fmt(summary['eeli_baseline'], '.4g')}; DSS/NSS: dependent/non-dependent "
                  "silent spaces, % of the lung voxels; RVDI: spread of the regional delay")
    for note in summary["notes"]:
        console.print(f"[yellow]note:[/yellow] {note}")
