"""`eitmon plot FILE.npz [--compare OTHER.npz ...] -o FIG.png`: slices side by side."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

_FILE = {"exists": True, "dir_okay": False, "readable": True}
MAX_SIDE_PX = 10000


def parse_size(text: str) -> tuple[int, int]:
    """'1600x900' -> (1600, 900); BadParameter unless both sides are in 1..MAX_SIDE_PX."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match:
        raise typer.BadParameter(f"expected WIDTHxHEIGHT in pixels, got {text!r}",
                                 param_hint="--size")
    width, height = int(match[1]), int(match[2])
    if not (0 < width <= MAX_SIDE_PX and 0 < height <= MAX_SIDE_PX):
        raise typer.BadParameter(f"each side must be 1..{MAX_SIDE_PX} px, got {text!r}",
                                 param_hint="--size")
    return width, height


def plot(
    file: Annotated[Path, typer.Argument(help="recording (its truth) or reconstruction .npz",
                                         metavar="FILE.npz", **_FILE)],
    output: Annotated[Path, typer.Option("-o", "--output", help="PNG to write",
                                                metavar="FIG.png")],
    frame: Annotated[int, typer.Option(help="frame index (0-based; negative counts from the "
                                            "end)")] = 0,
    compare: Annotated[list[Path] | None, typer.Option(help="another .npz, one row each (repeat)",
                                                       metavar="OTHER.npz", **_FILE)] = None,
    size: Annotated[str, typer.Option(help="WIDTHxHEIGHT in pixels",
                                              metavar="WxH")] = "1600x900",
) -> None:
    """Axial and coronal slices of FILE's frame, with each --compare file beside it."""
    from worker.plot import plot_volumes
    from worker.recording import RecordingError, load_volumes

    size_px = parse_size(size)
    if not output.parent.is_dir():
        raise typer.BadParameter(f"folder {output.parent} does not exist", param_hint="-o")
    panels, mask = [], None
    for path in [file, *(compare or [])]:
        try:
            volumes, file_mask, label = load_volumes(path)
        except RecordingError as exc:
            raise typer.BadParameter(str(exc), param_hint=str(path)) from None
        if mask is None:
            mask = file_mask
        elif file_mask.shape != mask.shape:
            raise typer.BadParameter(f"grid {file_mask.shape} differs from {file}'s "
                                     f"{mask.shape}", param_hint=str(path))
        if not -len(volumes) <= frame < len(volumes):
            raise typer.BadParameter(f"frame {frame} out of range: {path} has {len(volumes)} "
                                     "frames", param_hint="--frame")
        panels.append((label, path, volumes[frame]))
    labels = [label for label, _, _ in panels]
    named = [(f"{label} ({path.name})" if labels.count(label) > 1 else label, vol)
             for label, path, vol in panels]
    plot_volumes(named, mask, output, size_px=size_px, frame_label=f"frame {frame}")
    typer.echo(f"wrote {output} ({size_px[0]}x{size_px[1]} px)")
