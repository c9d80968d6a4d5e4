"""`eitmon bench tank`: the studies' runs and the report's tables (the runs themselves are
benchmarks, not tests: they take minutes per reconstruction)."""

from __future__ import annotations

import pytest

from worker.bench.tank import METHODS, STUDIES, markdown, study_runs
from worker.recon.diffinr.methods import RELINEARISE


def test_every_study_has_runs_with_distinct_labels() -> None:
    for study in STUDIES:
        runs = study_runs(study)
        assert runs and len({r.label for r in runs}) == len(runs)
    main = study_runs("main")
    assert [r.method for r in main if r.label in METHODS] == list(METHODS)
    assert [r.options for r in main if r.label == "tv relinearised"] == [
        {"relinearise": RELINEARISE}]
    assert all(r.options == {"relinearise": 0} for r in study_runs("linear"))
    assert {r.snr_db for r in study_runs("noise")} == {60.0, 50.0, 40.0}
    assert len({r.mesh_size for r in study_runs("mesh")}) == 3
    with pytest.raises(ValueError, match="unknown study"):
        study_runs("everything")


def test_markdown_has_one_table_per_study() -> None:
    row = {"label": "tv", "ssim": 0.5, "psnr": 15.0, "rcr_triangle": 1.04, "seconds": 2.0,
           "iterations": 10}
    report = {"date": "2026-12-06", "threads": 1, "inclusions": ["triangle"],
              "setup": {"geometry": "cylinder-1x32", "protocol": "skip4", "grid": [8, 32, 32],
                        "snr_db": 50.0, "seed": 0},
              "studies": {"main": [row], "noise": [dict(row, label="tv 40 dB")]}}
    text = markdown(report)
    assert "## main" in text and "## noise" in text
    assert "| tv | 0.500 | 15.00 | 1.04 | 2.0 | 10 |" in text
    assert "| tv 40 dB |" in text
