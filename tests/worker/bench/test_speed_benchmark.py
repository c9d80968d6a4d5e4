"""`worker.bench.speed.run_speed_benchmark`: every variant timed, and every variant computes the
same loss (the paths are one function), on a tiny synthetic problem."""

from __future__ import annotations

import math

import pytest

from worker.bench.speed import run_speed_benchmark


def test_speed_benchmark_times_variants_that_agree() -> None:
    out = run_speed_benchmark(grid=(8, 12, 12), n_iter=1, repeats=1, warmup=0, n_meas=32)
    expected = {"eager_reference", "fast_plain_j", "fast"}
    if out["fused_kernels"]:  # the torch-only fast path is then measured too
        expected.add("channels_last")
        if out["kernel_threads"] > 1:  # and the kernels on one thread
            expected.add("fast_1_kernel_thread")
    assert set(out["ms_per_iter"]) == set(out["cpu_ms_per_iter"]) == expected
    assert set(out["speedup_vs_eager"]) == expected - {"eager_reference"}
    for table in ("ms_per_iter", "speedup_vs_eager", "gflops_per_s"):
        assert all(math.isfinite(v) and v > 0 for v in out[table].values()), table
    # the eager reference and every fast path evaluate eq. (14) at the same parameters
    reference = out["loss_at_start"]["eager_reference"]
    for name, loss in out["loss_at_start"].items():
        assert loss == pytest.approx(reference, rel=1e-5), name
    assert out["params"] == 56_800 and out["data_rank"] == 16 and out["flops_per_iter"] > 0
