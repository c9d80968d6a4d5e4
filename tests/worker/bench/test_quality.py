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


def test_capped_frames_every_kth_ending_at_the_last() -> None:
    from worker.bench.quality import capped_frames

    assert capped_frames(20, None).tolist() == list(range(20))
    assert capped_frames(20, 20).tolist() == list(range(20))
    assert capped_frames(20, 5).tolist() == [3, 7, 11, 15, 19]
    assert capped_frames(19, 5).tolist() == [2, 6, 10, 14, 18]
    assert capped_frames(20, 3).tolist() == [5, 12, 19]
    assert capped_frames(4, 1).tolist() == [3]


def test_quality_benchmark_caps_frames_for_every_method(
        tmp_path: Path, coarse_geometry_file: Path) -> None:
    out = tmp_path / "bench"
    res = CliRunner().invoke(app, ["bench", "quality", "--methods", "tikhonov,tv", "--cases",
                                   "healthy-deep-breath", "--frames", "4", "--max-frames", "2",
                                   "--geometry", str(coarse_geometry_file), "--grid", "8", "16",
                                   "16", "--no-throughput", "--out", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "quality.json").read_text())
    assert report["max_frames"] == 2
    assert report["scored_frames"] == {"healthy-deep-breath": [1, 3]}
    assert [row["method"] for row in report["rows"]] == ["tikhonov", "tv"]
    assert "Capped at 2 frames" in (out / "quality.md").read_text()
    rows = json.loads((out / "rows-healthy-deep-breath.json").read_text())
    assert [row["method"] for row in rows] == ["tikhonov", "tv"]
    assert "tikhonov_throughput" not in report
