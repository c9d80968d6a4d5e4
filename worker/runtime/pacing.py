"""Pacing of the background work between frames: a background step (`d2ip-live`'s fine-tuning)
starts only when it should end before the next frame of any session is due.

Without pacing a frame that arrives during a step waits for its end: the frame's latency is the
frame path plus up to one step (docs/d2ip-live.md: p50 29 ms, p99 49.9 ms, for a 14 ms frame
path beside 25-30 ms steps). With it the frame finds the compute thread free, at the price of
the steps that would not have fitted.

- `FrameForecast`, per session: when its next frame is due on this process's clock, from the
  frames' arrival times on another clock (the worker: their stream entry ids, the API's XADD
  time on the Redis clock, which follow the real cadence even where a replayed recording's own
  timestamps do not; the benchmark: the recording's arrival times). The period is the median of
  the last differences of the arrival times; the offset between the two clocks is the smallest
  (seen − arrival) so far (queueing and the compute thread's other work only delay a frame, so
  the least-delayed frame is the best estimate).
  Due times are projected by whole periods past `now`; a session whose last frame is older than
  `STALE_PERIODS` periods (the belt paused) has no forecast.
- `StepPacer`: a high quantile of the recent steps' durations (`QUANTILE` of the last
  `HISTORY`) against the earliest forecast; before `HISTORY_MIN` steps are timed, every step may
  start.

The compute thread (`worker.runtime.compute`) and `eitmon bench realtime`'s virtual clock
(`worker.bench.realtime.play`) use the same two classes.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Iterable

PERIODS = 16  # timestamp differences the period is the median of
STALE_PERIODS = 20  # a session silent for this many periods has no forecast
HISTORY = 32  # step durations kept
HISTORY_MIN = 4  # steps timed before the pacer holds any back
QUANTILE = 0.9  # of the kept durations: what a step is expected to take


class FrameForecast:
    """When a session's next frame is due (module docstring)."""

    def __init__(self) -> None:
        self.stamps: deque[float] = deque(maxlen=PERIODS + 1)
        self.offset: float | None = None  # this clock minus the belt's, least-delayed frame
        self.last_seen: float | None = None

    def seen(self, stamp: float, now: float) -> None:
        """A frame that arrived at `stamp` (s, the other clock) is being handled at `now`."""
        if self.stamps and stamp <= self.stamps[-1]:
            return  # a replay or an out-of-order frame says nothing about the cadence
        self.stamps.append(stamp)
        self.offset = now - stamp if self.offset is None else min(self.offset, now - stamp)
        self.last_seen = now

    @property
    def period(self) -> float | None:
        if len(self.stamps) < 2:
            return None
        s = list(self.stamps)
        return statistics.median(b - a for a, b in zip(s, s[1:], strict=False))

    def next_due(self, now: float) -> float | None:
        """The first due time after `now` on this clock; None without a forecast."""
        period = self.period
        if period is None or self.offset is None or self.last_seen is None or period <= 0:
            return None
        if now - self.last_seen > STALE_PERIODS * period:
            return None
        due = self.stamps[-1] + self.offset + period
        if due <= now:
            due += period * (int((now - due) / period) + 1)
        return due


class StepPacer:
    """Whether a background step may start now (module docstring)."""

    def __init__(self) -> None:
        self.durations: deque[float] = deque(maxlen=HISTORY)

    def took(self, seconds: float) -> None:
        """A background step took `seconds`."""
        self.durations.append(seconds)

    @property
    def expected(self) -> float | None:
        """What the next step is expected to take (s); None before `HISTORY_MIN` steps."""
        if len(self.durations) < HISTORY_MIN:
            return None
        ordered = sorted(self.durations)
        return ordered[min(len(ordered) - 1, int(QUANTILE * len(ordered)))]

    def may_start(self, now: float, due: Iterable[float | None]) -> bool:
        """True when a step started `now` should end before every forecast due time."""
        expected = self.expected
        if expected is None:
            return True
        return all(d is None or now + expected <= d for d in due)
