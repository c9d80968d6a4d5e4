"""Output paths are made ready (or refused) before a command starts its work."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import typer

from worker.cli.output import output_file


def test_creates_the_missing_folders(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "figures.json"
    assert output_file(path) == path
    assert path.parent.is_dir() and not path.exists()
    assert output_file(None) is None


def test_refuses_a_folder_or_a_path_below_a_file(tmp_path: Path) -> None:
    with pytest.raises(typer.BadParameter, match="is a folder"):
        output_file(tmp_path)
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(typer.BadParameter, match="cannot create folder"):
        output_file(blocker / "out.json")


def test_simulate_refuses_before_simulating(tmp_path: Path,
                                            fails_cleanly: Callable[..., None]) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    fails_cleanly(["simulate", "healthy-deep-breath", "--out", str(blocker / "rec.npz")],
                  "cannot create folder")
