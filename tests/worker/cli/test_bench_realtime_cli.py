"""`eitmon bench realtime`: registered, and a duration beyond the recording refused."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from worker.cli.main import app


def test_bench_realtime_is_registered() -> None:
    result = CliRunner().invoke(app, ["bench", "realtime", "--help"])
    assert result.exit_code == 0, result.output
    for option in ("--duration", "--sessions", "--budget", "--threads"):
        assert option in result.output


def test_a_duration_beyond_the_tidal_recording_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["bench", "realtime", "--out", str(tmp_path),
                                      "--duration", "500"])
    assert result.exit_code != 0 and not any(tmp_path.iterdir())
