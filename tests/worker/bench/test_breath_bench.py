"""`eitmon bench breath`: the report's summary and table (the run itself needs a 3-minute
simulation: docs/worker.md has its figures)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from typer.testing import CliRunner

from worker.bench.breath import FIRST_BREATHS, BreathBench, _report, markdown
from worker.cli.main import app


def row(k: int, depth: float = 1.0) -> dict:
    return {"end_inspiration_s": 2.0 + 4.4 * k, "delay_s": 1.0 + 0.1 * k, "iterations": 100 + k,
            "seconds": 1.0, "depth": depth,
            "main": {"mssim": 0.4, "cc": 0.7, "err": 0.8},
            "tikhonov": {"mssim": 0.3, "cc": 0.6, "err": 0.9}}


def test_report_flags_first_and_irregular_breaths_and_summarises() -> None:
    rows = [row(k, depth=1.5 if k == 4 else 1.0) for k in range(9)]
    rec = SimpleNamespace(n_frames=800, frame_times=np.arange(800) / 20, mask=np.ones((2, 2, 2)))
    report = _report(BreathBench(options={"schedule": "adaptive"}), rows, rec,
                     SimpleNamespace(settings={}))
    s = report["summary"]
    assert [r["first"] for r in rows] == [k < FIRST_BREATHS for k in range(9)]
    assert [r["index"] for r in rows if r["irregular"]] == [4]
    assert s["all"]["breaths"] == 9 and s["first"]["breaths"] == FIRST_BREATHS
    assert s["mssim_ratio"] == np.float64(0.4) / 0.3
    assert s["first_third_delay_s"] < s["last_third_delay_s"]  # the lag per third
    assert report["breath_period_s"] == 4.4 and report["duration_s"] == 39.95
    text = markdown(report)
    assert "| 4 | 19.60 | 1.40 | 104 | 1.00 | 0.400 / 0.700 / 0.800 | 0.300 / 0.600 / 0.900 | " \
           "irregular depth |" in text
    assert "MSSIM ratio d2ip / Tikhonov: 1.33" in text


def test_command_is_registered() -> None:
    result = CliRunner().invoke(app, ["bench", "breath", "--help"])
    assert result.exit_code == 0 and "--duration" in result.output
