"""`eitmon bench clinical`: the scoring on synthetic tidal images, the online breaths and their
live lag, and the whole command on a tiny configuration (coarse model, 20 s, cheap methods)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from worker.bench.clinical import (
    PARAMETERS,
    Anatomy,
    OnlineBreath,
    compare,
    goal,
    goal_lines,
    live_lags,
    online_breaths,
    truth_tidal,
)
from worker.cli.main import app
from worker.ventilation.breaths import Breath
from worker.ventilation.space import VoxelSpace

SHAPE = (6, 12, 12)


def _anatomy() -> Anatomy:
    mask = np.zeros(SHAPE, dtype=bool)
    mask[:, 1:-1, 1:-1] = True
    return Anatomy(mask, VoxelSpace.from_extent(SHAPE, 0.3, 0.2, 0.15), (0.05, 0.1), "supine")


def _lungs(depths: list[float]) -> np.ndarray:
    """Tidal images (clinical sign) of two box lungs, the left one ventilating less dorsally."""
    images = np.zeros((len(depths), *SHAPE))
    for k, depth in enumerate(depths):
        images[k, 1:5, 3:9, 2:5] = depth  # patient's right (low columns)
        images[k, 1:5, 3:6, 7:10] = depth
        images[k, 1:5, 6:9, 7:10] = 0.3 * depth  # left, dorsal: poorly ventilated
    return images


def test_truth_against_itself_scores_perfectly() -> None:
    anatomy = _anatomy()
    truth = truth_tidal(_lungs([1.0, 0.8, 1.2]), anatomy)
    row = compare(truth, truth, anatomy.mask)
    assert set(row["error"]) == set(PARAMETERS)
    assert all(value == 0.0 for value in row["error"].values())
    assert row["metrics"]["mssim"] == pytest.approx(1.0)
    assert row["metrics"]["cc"] == pytest.approx(1.0)
    assert row["metrics"]["err"] == pytest.approx(0.0)
    assert row["lung_dice"] == 1.0 and len(row["breaths"]) == 3
    assert truth.parameters[0]["left_pct"] < 50.0  # the left lung ventilates less


def test_a_wrong_image_gives_the_parameter_error_it_should() -> None:
    anatomy = _anatomy()
    images = _lungs([1.0, 1.0])
    truth = truth_tidal(images, anatomy)
    mirrored = truth_tidal(images[..., ::-1].copy(), anatomy)  # left and right swapped
    row = compare(mirrored, truth, anatomy.mask)
    expected = abs(100.0 - 2 * truth.parameters[0]["left_pct"])
    assert row["error"]["left_pct"] == pytest.approx(expected)
    assert row["error"]["cov_x_pct"] > 1.0
    assert row["error"]["ventral_pct"] == pytest.approx(0.0, abs=1e-9)
    assert row["metrics"]["mssim"] < 0.9


def test_online_breaths_are_confirmed_after_their_peak() -> None:
    times = np.arange(0, 40, 0.05)
    curve = 1 - np.cos(2 * np.pi * times / 4.0) + 0.01 * np.sin(2 * np.pi * 1.2 * times)
    breaths = online_breaths(curve, times)
    assert len(breaths) >= 6
    for online in breaths:
        delay = online.ready_s - online.breath.end_inspiration_s
        assert 0.4 <= delay <= 1.5
        assert online.breath.duration_s == pytest.approx(4.0, abs=0.2)


def test_live_lag_queues_breaths_behind_a_slow_one() -> None:
    times = np.arange(0, 20, 0.05)
    first, second = Breath.at(times, 0, 40, 80), Breath.at(times, 80, 120, 160)
    lags = live_lags([OnlineBreath(first, 2.5), OnlineBreath(second, 6.5)], [6.0, 1.0])
    assert lags[0] == pytest.approx(2.5 + 6.0 - 2.0)
    assert lags[1] == pytest.approx(max(6.5, 8.5) + 1.0 - 6.0)


def test_clinical_benchmark_writes_every_method_and_parameter(
        tmp_path: Path, coarse_geometry_file: Path) -> None:
    out = tmp_path / "bench"
    res = CliRunner().invoke(app, ["bench", "clinical", "--methods", "tikhonov,tv",
                                   "--duration", "20", "--geometry", str(coarse_geometry_file),
                                   "--grid", "8", "16", "16", "--out", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "clinical.json").read_text())
    assert set(report["cases"]) == {"tidal-breathing", "edema-left"}
    tidal = report["cases"]["tidal-breathing"]
    assert len(tidal["breaths"]) >= 2 and tidal["detection"]["matched"] >= 2
    for case in report["cases"].values():
        assert set(case["methods"]) == {"tikhonov", "tv"}
        assert set(case["truth"]["mean"]) == set(PARAMETERS)
        for row in case["methods"].values():
            assert set(row["error"]) == set(PARAMETERS)
            assert all(value is not None and value >= 0 for value in row["error"].values())
            assert 0.2 < row["metrics"]["cc"] <= 1.0 and row["seconds_per_breath"] > 0
    edema = report["cases"]["edema-left"]
    assert edema["truth"]["mean"]["left_pct"] < 45.0  # the left dorsal lung does not ventilate
    assert tidal["methods"]["tikhonov"]["iterations_per_breath"] == 1
    assert report["goal"] is None  # no D2IP in this run
    table = (out / "clinical.md").read_text()
    assert "## tidal-breathing" in table and "| tv |" in table and "| truth (value) |" in table
    for case in ("tidal-breathing", "edema-left"):
        assert (out / f"tidal-{case}.png").stat().st_size > 10_000
    assert "edema-left" in res.output


def test_clinical_benchmark_rejects_unknown_names(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["bench", "clinical", "--cases", "healthy-deep-breath",
                                   "--out", str(tmp_path)])
    assert res.exit_code == 2 and "edema-left" in res.output
    res = CliRunner().invoke(app, ["bench", "clinical", "--methods", "magic",
                                   "--out", str(tmp_path)])
    assert res.exit_code == 2 and "tikhonov" in res.output


def test_goal_is_reported_per_d2ip_method_against_tikhonov() -> None:
    breaths = [{"start_s": 4.0 * k, "end_s": 4.0 * (k + 1)} for k in range(3)]

    def row(mssim: float, seconds: list[float], lags: list[float]) -> dict:
        return {"metrics": {"mssim": mssim}, "breaths": [{"seconds": s} for s in seconds],
                "lag_s": lags, "within_period": sum(lag <= 4.0 for lag in lags),
                "settings": {}}

    report = {"cases": {"tidal-breathing": {"breaths": breaths, "methods": {
        "tikhonov": row(0.3, [0.01] * 3, [0.5] * 3),
        "d2ip": row(0.36, [6.0, 2.0, 2.0], [6.5, 4.5, 2.5]),
        "edip": row(0.6, [1.0] * 3, [1.5] * 3),
        "tv": row(0.35, [1.0] * 3, [1.0] * 3)}}}}
    g = goal(report)
    assert g is not None and set(g) == {"d2ip", "edip"}
    assert g["d2ip"]["mssim_ratio"] == pytest.approx(1.2) and g["d2ip"]["late_breaths"] == [1, 2]
    assert g["edip"]["mssim_ratio"] == pytest.approx(2.0) and g["edip"]["late_breaths"] == []
    lines = goal_lines(g)
    assert "1.20x** (goal ≥ 1.3x: not met)" in lines[0] and "(not met; late: [1, 2])" in lines[0]
    assert "2.00x** (goal ≥ 1.3x: met)" in lines[1] and "(met; late: none)" in lines[1]
