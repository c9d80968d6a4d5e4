"""`eitmon bench educated`, tiny: the coarse model, two frames, a tiny pretraining."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
from typer.testing import CliRunner

from worker.bench.educated import ALONE, d2ip_row
from worker.bench.quality import Setup
from worker.cli.main import app

TINY = ["--option", "iterations=[12, 6, 4]", "--option", "pretrain_steps=3", "--option",
        "pretrain_samples=6", "--option", "pretrain_fem_samples=0"]


def test_educated_benchmark_writes_tables_and_figures(tmp_path: Path,
                                                      coarse_geometry_file: Path) -> None:
    out = tmp_path / "bench"
    res = CliRunner().invoke(app, [
        "bench", "educated", "--cases", "healthy-deep-breath", "--frames", "2", "--geometry",
        str(coarse_geometry_file), "--grid", "8", "16", "16", "--sweep", "2,3",
        "--curve-iterations", "4", "--curve-every", "2", *TINY, "--out", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "educated.json").read_text())
    (case,) = report["cases"]
    methods = [r["method"] for r in case["rows"]]
    assert methods == ["d2ip (paper schedule)", "edip (paper schedule)", "edip (2 a frame)",
                       "edip (3 a frame)", ALONE, "tikhonov (the preview)"]
    rows = {r["method"]: r for r in case["rows"]}
    d2ip = rows["d2ip (paper schedule)"]
    upws = d2ip["upws_iterations_in_first_frame"]  # 12 unless the store had the warm start
    assert upws in (0, 12) and d2ip["iterations_total"] == upws + 6 + 4
    assert rows["edip (paper schedule)"]["iterations_total"] == 6 + 4  # no UPWS
    assert rows["edip (3 a frame)"]["iterations_total"] == 6
    assert rows[ALONE]["iterations_total"] == 0
    reach = case["reaches_d2ip"]
    if reach is not None:  # the smallest edip count at D2IP's MSSIM and ERR
        assert rows[reach["method"]]["mssim"] >= rows["d2ip (paper schedule)"]["mssim"]
    curves = report["curve"]["curves"]
    assert set(curves) == {"dip (Kaiming)", "d2ip (UPWS)", "edip (educated)"}
    assert all(c["iteration"] == [0, 2, 4] for c in curves.values())
    assert (out / "educated-curve.png").stat().st_size > 10_000
    assert (out / "slices-healthy-deep-breath.png").is_file()
    assert "edip reaches D2IP's quality" in (out / "educated.md").read_text()


def test_d2ip_rows_are_read_from_a_quality_report(tmp_path: Path) -> None:
    setup = Setup(frames=2, geometry="thorax-2x16", grid=[16, 32, 32])
    path = tmp_path / "quality.json"
    row = {"case": "edema-left", "method": "d2ip", "cc": 0.9, "psnr": 20.0, "mssim": 0.5,
           "err": 0.6, "seconds_per_frame": 2.0, "iterations": 260.0}
    path.write_text(json.dumps({"date": "2026-12-06", "setup": asdict(setup),
                                "frames": {"edema-left": 19}, "rows": [row]}))
    got = d2ip_row("edema-left", setup, (path,))
    assert got is not None and got["mssim"] == 0.5 and got["iterations_total"] == 260 * 19
    assert d2ip_row("healthy-deep-breath", setup, (path,)) is None
    with pytest.raises(ValueError, match="another setup"):
        d2ip_row("edema-left", Setup(frames=3), (path,))
