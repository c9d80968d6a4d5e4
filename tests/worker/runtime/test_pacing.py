"""`pacing.py`: the next frame's forecast and the pacer of background steps; and the paced
scheduling of `eitmon bench realtime` on a fake clock."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from worker.bench import realtime
from worker.recon.base import FrameResult
from worker.runtime.pacing import HISTORY_MIN, STALE_PERIODS, FrameForecast, StepPacer


def test_the_forecast_follows_the_cadence_and_the_least_delayed_frame() -> None:
    f = FrameForecast()
    assert f.next_due(0.0) is None
    # frames every 50 ms on the other clock, seen 100 s later on this one plus 0-20 ms delay
    for k, delay in enumerate([0.020, 0.005, 0.012, 0.0, 0.018]):
        f.seen(0.05 * k, 100.0 + 0.05 * k + delay)
    assert f.period == pytest.approx(0.05) and f.offset == pytest.approx(100.0)
    assert f.next_due(100.21) == pytest.approx(100.25)  # the fifth frame's successor
    assert f.next_due(100.26) == pytest.approx(100.30)  # projected by whole periods
    f.seen(0.1, 100.5)  # out of order: ignored
    assert f.period == pytest.approx(0.05)
    assert f.next_due(100.22 + STALE_PERIODS * 0.05 + 0.01) is None  # the belt paused


def test_the_pacer_holds_back_a_step_that_would_overrun_the_next_frame() -> None:
    pacer = StepPacer()
    assert pacer.may_start(0.0, [0.001])  # nothing timed yet: every step may start
    for _ in range(HISTORY_MIN):
        pacer.took(0.030)
    assert pacer.expected == pytest.approx(0.030)
    assert pacer.may_start(0.0, [0.031, None]) and not pacer.may_start(0.0, [0.031, 0.029])
    assert pacer.may_start(0.0, [None, None])
    pacer.took(0.2)  # one slow step among five: the 90th percentile follows it
    assert pacer.expected == pytest.approx(0.2)


class _Fake:
    """A method on a fake clock: a frame takes 10 ms, a background step 30 ms."""

    method = "fake"

    def __init__(self, clock: dict[str, float]) -> None:
        self.clock, self.steps = clock, 0

    def push(self, dv: np.ndarray) -> FrameResult:
        self.clock["t"] += 0.010
        return FrameResult(volume=np.zeros((1, 1, 1), np.float32), iterations=1, loss=0.0,
                           milliseconds=10.0)

    def background_step(self) -> bool:
        self.clock["t"] += 0.030
        self.steps += 1
        return True


def test_paced_steps_never_delay_a_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    """20 frames/s, a 10 ms frame path and 30 ms steps: one step fits between two frames and a
    second does not, so once the pacer has timed its first steps every frame is out 10 ms
    after its arrival (unpaced, a frame arriving during a step waited up to 30 ms more), and
    one step runs per frame."""
    clock = {"t": 0.0}
    monkeypatch.setattr(realtime.time, "perf_counter", lambda: clock["t"])
    scorer: Any = lambda volume, k: {"mssim": 0.0, "cc": 0.0, "err": 0.0}  # noqa: E731
    times = np.arange(100) * 0.05
    fake = _Fake(clock)
    played = realtime.play([fake], np.zeros((100, 3)), times, scorer)[0]
    assert played.index == list(range(100)) and played.coalesced == 0
    settled = played.latency[HISTORY_MIN + 2:]
    assert max(settled) == pytest.approx(0.010)
    assert 90 <= fake.steps <= 101
