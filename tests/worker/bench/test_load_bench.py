"""`eitmon bench load`, tiny: a small grid, the baseline and one busy process."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from worker.bench.load import busy_processes
from worker.cli.main import app
from worker.recon.d2ip.cpu import library

needs_kernels = pytest.mark.skipif(not library.available(), reason="no C++ compiler")


@needs_kernels
def test_load_benchmark_times_both_policies_at_each_level(tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    res = CliRunner().invoke(app, [
        "bench", "load", "--grid", "4", "8", "8", "--busy", "0", "--busy", "1", "--n-iter", "2",
        "--repeats", "1", "--warmup", "8", "--out", str(out)])
    assert res.exit_code == 0, res.output
    result = json.loads(out.read_text())
    assert result["loads"] == [0, 1] and set(result["levels"]) == {"0", "1"}
    for level in result["levels"].values():
        assert set(level["ms_per_iter"]) == {"old", "new"}
        assert all(ms > 0 for ms in level["ms_per_iter"].values())
        assert level["spin_us"]["old"] == library.SPIN_US
        assert level["kernel_threads"]["old"] == library.default_threads()
        for policy in ("old", "new"):  # excess = slowdown / share lost = the CPU ms ratio
            assert level["excess"][policy] == pytest.approx(
                level["cpu_ms_per_iter"][policy]
                / result["levels"]["0"]["cpu_ms_per_iter"][policy])
    assert result["levels"]["0"]["slowdown"] == {"old": 1.0, "new": 1.0}
    assert library.set_threads(None) is None and library.set_spin(None) is None  # restored


def test_busy_processes_run_until_the_block_ends() -> None:
    with busy_processes(2) as procs:
        assert all(p.poll() is None for p in procs)
    assert all(p.poll() is not None for p in procs)


def test_busy_processes_run_at_the_nice_level_asked() -> None:
    own = os.getpriority(os.PRIO_PROCESS, 0)
    with busy_processes(1, nice=19) as procs:
        assert os.getpriority(os.PRIO_PROCESS, procs[0].pid) == min(19, own + 19)
