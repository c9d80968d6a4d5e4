"""Chooses the fused CPU kernels' thread count by timing whole Adam iterations.

A second core pays only when the two cores share their caches (every tensor a worker thread
writes is otherwise read across the chip), and a virtual machine's host may change that at will
(docs/d2ip.md, "Design decisions"). So the count is measured, not assumed: every `every`
iterations the tuner times `probe` iterations with each candidate count and keeps the fastest.
The kernels' results do not depend on their thread count, so switching changes only the speed.
An `optimise.IterationHook`: `CpuExecution` passes it to `optimise_frame`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager

from worker.recon.d2ip.cpu import library


class ThreadTuner:
    """`with tuner.iteration(): ...` around each Adam iteration; sets `library.tune(...)`.

    Idle (no probing) when `library.set_threads` fixed the count or there is one CPU."""

    def __init__(self, probe: int = 4, every: int = 500) -> None:
        if probe < 2 or every < 1:
            raise ValueError("probe must be at least 2 (one warm-up) and every at least 1")
        self.probe, self.every = probe, every
        self.since = every  # iterations since the last choice: probe at the first iteration
        self.plan: list[int] = []  # thread counts of the probe iterations still to run
        self.times: dict[int, list[float]] = {}
        self.choices: list[int] = []  # what each probe chose (for logs and tests)

    def _candidates(self) -> tuple[int, ...]:
        n = library.default_threads()
        return (1, n) if n > 1 and library.is_automatic() else ()

    @contextmanager
    def iteration(self) -> Iterator[None]:
        if not self.plan and self.since >= self.every:
            self.plan = [c for c in self._candidates() for _ in range(self.probe)]
            self.times = {}
            self.since = 0
        probing = self.plan.pop(0) if self.plan else None
        if probing is not None:
            library.tune(probing)
        t0 = time.perf_counter()
        yield
        elapsed = time.perf_counter() - t0
        if probing is None:
            self.since += 1
            return
        self.times.setdefault(probing, []).append(elapsed)
        if not self.plan:  # all candidates timed: keep the fastest (first iteration: warm-up)
            best = min(self.times, key=lambda c: statistics.median(self.times[c][1:]))
            library.tune(best)
            self.choices.append(best)
