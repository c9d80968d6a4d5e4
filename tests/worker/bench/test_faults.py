"""The fault bench on a tiny configuration: rows, table, and the handling's effect."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.bench.faults import HANDLINGS, FaultSetup, benchmark, scenario_geometry

TINY = FaultSetup(grid=(6, 12, 12), duration=4.0, frames=3)


def test_scenario_geometries_differ_from_the_model_only_where_named() -> None:
    base = TINY.model_geometry
    assert scenario_geometry(TINY, "none") == base
    belt = scenario_geometry(TINY, "belt-1cm")
    assert belt["electrodes"]["ring_heights"][0] == pytest.approx(
        base["electrodes"]["ring_heights"][0] + 0.01)
    wider = scenario_geometry(TINY, "wider-10")
    assert wider["domain"]["width"] == pytest.approx(1.1 * base["domain"]["width"])
    assert wider["domain"]["depth"] == base["domain"]["depth"]


def test_bench_tabulates_every_method_and_handling(model_cache_dir: str, tmp_path: Path
                                                   ) -> None:
    report = benchmark(["tikhonov", "greit"], ["none", "broken-1"], TINY, tmp_path)
    assert len(report["rows"]) == 2 * 2 * len(HANDLINGS)
    rows = {(r["scenario"], r["method"], r["handling"]): r for r in report["rows"]}
    assert rows[("broken-1", "tikhonov", "none")]["flagged"] == [4]  # the quality report finds it
    assert rows[("none", "tikhonov", "none")]["flagged"] == []
    for method in ("tikhonov", "greit"):
        broken = rows[("broken-1", method, "none")]
        handled = rows[("broken-1", method, "exclude")]
        assert handled["err"] < broken["err"]
        assert handled["mssim"] > broken["mssim"]
    text = (tmp_path / "faults.md").read_text()
    assert "| broken-1 | greit | 4 |" in text
    assert (tmp_path / "faults.json").is_file()
