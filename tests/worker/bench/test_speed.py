"""`eitmon bench speed`, tiny: a small synthetic grid and two frames of the coarse model."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from worker.cli.main import app


def test_speed_benchmark_times_iterations_and_frames(
        tmp_path: Path, coarse_geometry_file: Path) -> None:
    geometry = coarse_geometry_file
    out = tmp_path / "new" / "speed.json"  # the folder is created
    res = CliRunner().invoke(app, [
        "bench", "speed", "--grid", "8", "16", "16", "--n-iter", "2", "--repeats", "1",
        "--warmup", "1", "--geometry", str(geometry), "--sim-frames", "2", "--frames", "2",
        "--option", "iterations=[30, 90, 70]", "--option", "min_iterations=45", "--out", str(out)])
    assert res.exit_code == 0, res.output
    result = json.loads(out.read_text())
    iteration = result["iteration"]
    assert set(iteration["ms_per_iter"]) >= {"eager_reference", "fast"}
    assert all(ms > 0 for ms in iteration["ms_per_iter"].values())
    losses = iteration["loss_at_start"]  # the variants compute one function
    assert max(losses.values()) - min(losses.values()) <= 1e-5 * losses["eager_reference"]
    seq = result["sequence"]
    assert seq["grid"] == [8, 16, 16] and seq["frames"] == 2
    paper, adaptive = seq["runs"]["paper"], seq["runs"]["adaptive"]
    assert paper["iterations"] == [90, 70]
    assert all(45 <= n <= m for n, m in zip(adaptive["iterations"], [90, 70], strict=True))
    assert paper["mean"]["cc"] > 0.5 and all(s > 0 for s in adaptive["seconds"])
    assert "ms/iteration" in res.output
