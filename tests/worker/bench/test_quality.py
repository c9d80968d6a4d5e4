"""`eitmon bench quality`, tiny: one case, two frames, the coarse model, Tikhonov only."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from worker.cli.main import app


def test_quality_benchmark_writes_table_json_and_figure(
        tmp_path: Path, coarse_geometry_file: Path) -> None:
    geometry = coarse_geometry_file
    out = tmp_path / "bench"
    res = CliRunner().invoke(app, ["bench", "quality", "--methods", "tikhonov", "--cases",
                                   "healthy-deep-breath", "--frames", "2", "--geometry",
                                   str(geometry), "--grid", "8", "16", "16", "--out", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "quality.json").read_text())
    (row,) = report["rows"]
    assert row["method"] == "tikhonov" and row["case"] == "healthy-deep-breath"
    assert row["cc"] > 0.7 and row["seconds_per_frame"] > 0
    tp = report["tikhonov_throughput"]
    assert tp["grid"] == [8, 16, 16] and tp["push_fps"] > 0 and tp["numpy_pinv_fps"] > 0
    assert tp["push_dense_fps"] > 0 and 0 < tp["rank"] < tp["n_measurements"]
    table = (out / "quality.md").read_text()
    assert "| healthy-deep-breath | tikhonov |" in table and "frames/s" in table
    assert (out / "slices-healthy-deep-breath.png").stat().st_size > 10_000
    assert "tikhonov" in res.output


def test_quality_benchmark_rejects_unknown_names(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["bench", "quality", "--methods", "tikhonov,magic",
                                   "--out", str(tmp_path)])
    assert res.exit_code == 2 and "magic" in res.output and "tv" in res.output
    res = CliRunner().invoke(app, ["bench", "quality", "--cases", "asthma", "--out",
                                   str(tmp_path)])
    assert res.exit_code == 2 and "healthy-deep-breath" in res.output
