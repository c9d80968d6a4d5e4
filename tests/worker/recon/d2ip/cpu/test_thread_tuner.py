"""`ThreadTuner`: the fused kernels' thread count chosen by timing iterations."""

from __future__ import annotations

import time

import pytest

from worker.recon.d2ip.cpu import library
from worker.recon.d2ip.cpu.thread_tuner import ThreadTuner


@pytest.fixture(autouse=True)
def _two_cpus(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(library, "default_threads", lambda: 2)
    before = library.set_threads(None)
    yield
    library.set_threads(before)
    library.tune(None)


def _run(tuner: ThreadTuner, n: int, seconds_by_threads: dict[int, float]) -> list[int]:
    """n iterations whose duration depends on the kernels' thread count; the counts used."""
    used = []
    for _ in range(n):
        with tuner.iteration():
            used.append(library.threads())
            time.sleep(seconds_by_threads[library.threads()])
    return used


def test_probes_both_counts_and_keeps_the_faster() -> None:
    tuner = ThreadTuner(probe=3, every=5)
    used = _run(tuner, 6 + 5, {1: 0.001, 2: 0.02})
    assert used[:6] == [1, 1, 1, 2, 2, 2]  # the probe
    assert used[6:] == [1] * 5 and tuner.choices == [1]
    used = _run(tuner, 6, {1: 0.02, 2: 0.001})  # the machine changed: probed again
    assert used == [1, 1, 1, 2, 2, 2] and tuner.choices == [1, 2]
    assert library.threads() == 2


def test_a_fixed_thread_count_is_left_alone() -> None:
    library.set_threads(1)
    tuner = ThreadTuner(probe=2, every=3)
    assert _run(tuner, 8, {1: 0.0, 2: 0.0}) == [1] * 8
    assert tuner.choices == []


def test_rejects_a_probe_without_warm_up() -> None:
    with pytest.raises(ValueError, match="probe"):
        ThreadTuner(probe=1)
