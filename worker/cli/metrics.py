"""`eitmon metrics RECON.npz TRUTH.npz`: CC, PSNR, MSSIM and ERR of a reconstruction."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer

_FILE = {"exists": True, "dir_okay": False, "readable": True}


def _json_value(value: Any) -> Any:
    """Standard JSON for a metric: nan -> null, ±inf -> "inf"/"-inf"."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    return value


def metrics(
    recon: Annotated[Path, typer.Argument(help="reconstruction (or recording) .npz",
                                             metavar="RECON.npz", **_FILE)],
    truth: Annotated[Path, typer.Argument(help="recording .npz holding the truth",
                                             metavar="TRUTH.npz", **_FILE)],
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Score RECON against the truth in TRUTH, per frame and on average, inside the body mask."""
    from worker.metrics import score
    from worker.recording import RecordingError, load_volumes

    try:
        volumes, _, label = load_volumes(recon)
    except RecordingError as exc:
        raise typer.BadParameter(str(exc), param_hint="RECON") from None
    try:
        reference, mask, _ = load_volumes(truth)
    except RecordingError as exc:
        raise typer.BadParameter(str(exc), param_hint="TRUTH") from None
    if volumes.shape != reference.shape:
        raise typer.BadParameter(
            f"RECON volumes {volumes.shape} do not match TRUTH {reference.shape} "
            "(frames, planes, rows, columns)", param_hint="RECON")
    result = score(volumes, reference, mask)
    result.update(method=label, recon=str(recon), truth=str(truth))
    if as_json:
        typer.echo(json.dumps(_json_value(result)))
        return
    _print_table(result)


def _print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    names = (Path(result["recon"]).name, Path(result["truth"]).name)
    table = Table(title=f"{result['method']}: {names[0]} vs {names[1]}")
    for name in ("frame", "CC", "PSNR (dB)", "MSSIM", "ERR"):
        table.add_column(name, justify="right")
    for i in range(result["frames"]):
        table.add_row(str(i), *(f"{result[m][i]:.4f}" for m in ("cc", "psnr", "mssim", "err")))
    table.add_section()
    table.add_row("mean", *(f"{result['mean'][m]:.4f}" for m in ("cc", "psnr", "mssim", "err")),
                  style="bold")
    console = Console()
    console.print(table)
    window = result["window"]
    console.print(f"data range {result['data_range']:.6g} (truth max - min inside the mask over "
                  "all frames); SSIM window "
                  + (f"{window}x{window}x{window} uniform" if window else "none (grid too small)"))
    for note in result["notes"]:
        console.print(f"[yellow]note:[/yellow] {note}")
