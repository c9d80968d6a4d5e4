"""`eitmon bench convergence`, tiny: the coarse model, two frames, a handful of iterations."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from worker.bench.convergence import VARIANTS, iterations_to_reach
from worker.cli.main import app


def test_iterations_to_reach() -> None:
    assert iterations_to_reach([5.0, 3.0, 2.0, 1.0], 2.0) == 2
    assert iterations_to_reach([5.0, 3.0], 4.0) == 1
    assert iterations_to_reach([1.0], 2.0) == 0
    assert iterations_to_reach([5.0, 3.0], 1.0) is None


def test_convergence_benchmark_writes_curves_and_figure(
        tmp_path: Path, coarse_geometry_file: Path) -> None:
    geometry = coarse_geometry_file
    out = tmp_path / "bench"
    res = CliRunner().invoke(app, [
        "bench", "convergence", "--frames", "2", "--geometry", str(geometry), "--grid", "8",
        "16", "16", "--iterations", "10", "--option", "iterations=[12, 6, 4]", "--out",
        str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "convergence.json").read_text())
    runs = {r["variant"]: r for r in report["runs"]}
    assert tuple(runs) == VARIANTS
    assert all(len(r["data_loss"]) == 11 for r in runs.values())  # theta^(0..10)
    targets = report["targets"]
    assert targets["cold"] == runs["dip"]["data_loss"][-1]
    assert targets["same_loss"] == runs["dip+4D-TV"]["data_loss"][-1]
    assert 0 < targets["truth"] < runs["dip"]["data_loss"][0]
    assert runs["dip"]["iterations_to"]["cold"] is not None
    assert set(report["ratios"]) == {"cold", "same_loss", "truth"}
    assert {n: r["iterations_before"] for n, r in runs.items()} == {
        "dip": 12, "dip+4D-TV": 12, "d2ip-no-upws": 12, "d2ip-no-tpp": 12 + 6, "d2ip": 12 + 6}
    assert runs["dip"]["settings"]["loss"]["lam"] == 0.0
    assert runs["dip+4D-TV"]["settings"]["loss"]["lam"] == 0.002
    assert runs["d2ip"]["settings"]["warm_start"]["source"] == "loaded"  # shared UPWS run
    assert (out / "convergence.png").stat().st_size > 10_000
    assert (out / "recording-healthy-deep-breath.npz").is_file()
    assert "d2ip / dip iterations to cold DIP's final" in res.output
    assert "d2ip / dip+4D-TV iterations" in res.output


def test_convergence_benchmark_rejects_bad_frames(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["bench", "convergence", "--frames", "4", "--frame", "5",
                                   "--out", str(tmp_path)])
    assert res.exit_code == 2 and "1..4" in res.output
    res = CliRunner().invoke(app, ["bench", "convergence", "--case", "asthma", "--out",
                                   str(tmp_path)])
    assert res.exit_code == 2 and "healthy-deep-breath" in res.output
