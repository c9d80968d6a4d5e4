"""`ThreadTuner`: the fused kernels' thread count chosen by timing iterations, and thread count
and spin following the machine's load."""

from __future__ import annotations

import os
import time

import pytest

from worker.recon.d2ip.cpu import library
from worker.recon.d2ip.cpu.thread_tuner import ThreadTuner


@pytest.fixture(autouse=True)
def _two_cpus(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(library, "default_threads", lambda: 2)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(library, "awake_workers", lambda: 0)  # no pool: nothing of ours runs
    # the others' priority unknown (the count alone decides), unless a test says otherwise
    monkeypatch.setattr(library, "ForegroundDemand", lambda: lambda: None)
    before = library.set_threads(None), library.set_spin(None)
    yield
    library.set_threads(before[0])
    library.set_spin(before[1])
    library.tune(None)
    library.tune_spin(library.SPIN_US)


def idle() -> int:
    """The machine's runnable threads when only the tuner's own thread runs."""
    return 1


def _run(tuner: ThreadTuner, n: int, seconds_by_threads: dict[int, float]) -> list[int]:
    """n iterations whose duration depends on the kernels' thread count; the counts used."""
    used = []
    for _ in range(n):
        with tuner.iteration():
            used.append(library.threads())
            time.sleep(seconds_by_threads[library.threads()])
    return used


def test_probes_both_counts_and_keeps_the_faster() -> None:
    tuner = ThreadTuner(probe=3, every=5, runnable=idle)
    used = _run(tuner, 6 + 5, {1: 0.001, 2: 0.02})
    assert used[:6] == [1, 1, 1, 2, 2, 2]  # the probe
    assert used[6:] == [1] * 5 and tuner.choices == [1]
    used = _run(tuner, 6, {1: 0.02, 2: 0.001})  # the machine changed: probed again
    assert used == [1, 1, 1, 2, 2, 2] and tuner.choices == [1, 2]
    assert library.threads() == 2


def test_a_fixed_thread_count_is_left_alone() -> None:
    library.set_threads(1)
    tuner = ThreadTuner(probe=2, every=3, runnable=idle)
    assert _run(tuner, 8, {1: 0.0, 2: 0.0}) == [1] * 8
    assert tuner.choices == []


def test_rejects_a_probe_without_warm_up() -> None:
    with pytest.raises(ValueError, match="probe"):
        ThreadTuner(probe=1)


def test_a_busy_machine_gets_one_sleeping_thread() -> None:
    """Three other runnable threads on two CPUs: no CPU is free, so no second thread is probed
    and the pool sleeps at once instead of spinning."""
    tuner = ThreadTuner(probe=2, every=100, runnable=lambda: 1 + 3)
    assert _run(tuner, 4, {1: 0.0, 2: 0.0}) == [1] * 4
    assert library.spin() == 0 and tuner.choices == []


def test_the_tuner_follows_the_load_as_it_changes() -> None:
    load = {"now": 1}
    tuner = ThreadTuner(probe=2, every=1000, runnable=lambda: load["now"])
    assert _run(tuner, 5, {1: 0.02, 2: 0.001}) == [1, 1, 2, 2, 2]  # idle: probed, 2 won
    assert library.spin() == library.SPIN_US
    load["now"] = 1 + 4  # four others start: once the average has moved by a whole thread,
    used = _run(tuner, 30, {1: 0.0, 2: 0.0})  # the tuner re-probes: only one candidate left
    assert used[0] == 2 and used[-1] == 1 and library.spin() == 0
    load["now"] = 1  # they end: probed again with both counts, spinning again
    used = _run(tuner, 60, {1: 0.02, 2: 0.001})
    assert used[-1] == 2 and library.spin() == library.SPIN_US and tuner.choices[-1] == 2


def test_not_following_the_load_keeps_the_idle_policy() -> None:
    tuner = ThreadTuner(probe=2, every=100, follow_load=False, runnable=lambda: 1 + 3)
    assert _run(tuner, 4, {1: 0.02, 2: 0.001}) == [1, 1, 2, 2]
    assert library.spin() == library.SPIN_US


def test_a_fixed_spin_takes_precedence() -> None:
    library.set_spin(50)
    _run(ThreadTuner(probe=2, every=100, runnable=lambda: 1 + 3), 2, {1: 0.0, 2: 0.0})
    assert library.spin() == 50
    with pytest.raises(ValueError, match="spin"):
        library.set_spin(-1)


def test_tuners_sharing_the_kernels_each_use_their_own_choice() -> None:
    """Two reconstructors in one process: each iteration runs with its own tuner's count."""
    slow_two, fast_two = (ThreadTuner(probe=2, every=100, runnable=idle) for _ in range(2))
    _run(slow_two, 4, {1: 0.001, 2: 0.02})
    _run(fast_two, 4, {1: 0.02, 2: 0.001})
    assert (slow_two.choices, fast_two.choices) == ([1], [2])
    assert _run(slow_two, 1, {1: 0.0, 2: 0.0}) + _run(fast_two, 1, {1: 0.0, 2: 0.0}) == [1, 2]


def test_the_load_going_away_gives_both_cpus_back() -> None:
    """Two others for a while, then none: once the average says both CPUs are free the tuner
    probes again and keeps two threads (it used to re-probe only when the average had moved by
    a whole thread since the last probe, which a decay towards 0 from below 1.5 never does)."""
    reads = iter([1 + 2] * 40)
    tuner = ThreadTuner(probe=2, every=1000, runnable=lambda: next(reads, 1))
    used = _run(tuner, 40, {1: 0.0, 2: 0.0})
    assert used[-1] == 1 and library.spin() == 0
    used = _run(tuner, 60, {1: 0.004, 2: 0.001})
    assert used[-1] == 2 and tuner.choices[-1] == 2 and library.spin() == library.SPIN_US


def test_one_transient_reading_does_not_keep_one_thread() -> None:
    """Two other threads runnable at the first reading only (short jobs): the first choice is
    one thread, and the tuner comes back to two within tens of iterations, not after
    `every` (this regression kept `bench load` at one thread on an idle machine)."""
    reads = iter([1 + 2])
    tuner = ThreadTuner(probe=2, every=1000, runnable=lambda: next(reads, 1))
    used = _run(tuner, 40, {1: 0.004, 2: 0.001})
    assert used[0] == 1 and used[-1] == 2 and tuner.choices == [2]


def test_the_pool_s_awake_workers_are_not_others() -> None:
    """The machine counts this pool's spinning worker as runnable; the tuner does not count it
    as another process's thread, so an idle machine keeps both CPUs."""
    awake = {"n": 0}

    def machine() -> int:
        return 1 + awake["n"]  # this thread and the pool's worker while it spins

    tuner = ThreadTuner(probe=2, every=1000, runnable=machine, own=lambda: awake["n"])
    used = []
    for _ in range(30):
        with tuner.iteration():
            used.append(library.threads())
            time.sleep({1: 0.004, 2: 0.001}[library.threads()])
        awake["n"] = library.threads() - 1  # the worker spins after the iteration's last job
    assert used[-1] == 2 and tuner.others == 0.0 and library.spin() == library.SPIN_US


def test_an_average_near_a_boundary_does_not_re_probe_every_iteration() -> None:
    """Others alternating 0 and 1 (average near 0.5): the free-CPU count flips at 0.5, the
    tuner re-probes only once the average is clear of it by `HYSTERESIS`."""
    reads = iter([1, 2] * 100)
    tuner = ThreadTuner(probe=2, every=1000, runnable=lambda: next(reads))
    _run(tuner, 200, {1: 0.0, 2: 0.0})
    assert len(tuner.choices) == 1  # the first probe, with both CPUs free


def test_niced_jobs_do_not_take_the_cpus() -> None:
    """Three other runnable threads, but at nice 19: the others at normal priority want
    almost no CPU (`library.ForegroundDemand`), so both CPUs are probed and the pool spins;
    the same count at normal priority keeps one sleeping thread."""
    niced = ThreadTuner(probe=2, every=100, runnable=lambda: 1 + 3, foreground=lambda: 0.05)
    assert _run(niced, 4, {1: 0.02, 2: 0.001}) == [1, 1, 2, 2]
    assert library.spin() == library.SPIN_US and niced.others == pytest.approx(0.05)
    normal = ThreadTuner(probe=2, every=100, runnable=lambda: 1 + 3, foreground=lambda: 3.0)
    assert _run(normal, 4, {1: 0.02, 2: 0.001}) == [1] * 4 and library.spin() == 0
