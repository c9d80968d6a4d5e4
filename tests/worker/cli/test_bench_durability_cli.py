"""`eitmon bench durability`: registered, and a wrong option refused before anything starts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from typer.testing import CliRunner

from worker.cli.main import app


def test_bench_durability_is_registered() -> None:
    result = CliRunner().invoke(app, ["bench", "durability", "--help"])
    assert result.exit_code == 0, result.output
    assert "--appendfsync" in result.output


def test_an_unknown_fsync_policy_is_refused(tmp_path: Path,
                                            fails_cleanly: Callable[..., None]) -> None:
    fails_cleanly(["bench", "durability", "--out", str(tmp_path / "d"), "--appendfsync", "no"],
                  "--appendfsync", "always or everysec")
    assert not (tmp_path / "d").exists()
