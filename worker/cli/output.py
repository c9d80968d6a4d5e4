"""Output paths of the CLI: made ready before the work starts, so nothing is lost at the end."""

from __future__ import annotations

import os
from pathlib import Path

import typer


def output_file(path: Path | None, option: str = "--out") -> Path | None:
    """Create `path`'s folder now and check it is writable; exit 2 with a clear message if not.

    Commands call this first: a simulation or a benchmark can run for many minutes, and its
    result must not fail to be written at the end (None passes through: no output asked).
    """
    if path is None:
        return None
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise typer.BadParameter(f"cannot create folder {folder}: {err.strerror}",
                                 param_hint=option) from None
    if path.is_dir():
        raise typer.BadParameter(f"{path} is a folder; give a file name", param_hint=option)
    if not os.access(folder, os.W_OK):
        raise typer.BadParameter(f"folder {folder} is not writable", param_hint=option)
    return path
