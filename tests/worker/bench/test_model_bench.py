from __future__ import annotations

from worker.bench.model import jacobian_comparison, scaling_exponents


def test_jacobian_comparison_runs_both_on_the_same_mesh() -> None:
    rows = jacobian_comparison(sizes=(0.07, 0.05))
    assert [r["n_nodes"] for r in rows] == sorted(r["n_nodes"] for r in rows)
    assert all(r["ours_seconds"] > 0 and r["pyeit_seconds"] > 0 for r in rows)
    assert set(scaling_exponents(rows)) == {"ours", "pyeit"}
