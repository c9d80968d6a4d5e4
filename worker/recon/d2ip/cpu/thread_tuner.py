"""Chooses the fused CPU kernels' thread count and spin by the machine's load and by timing
whole Adam iterations.

A second core pays only when the two cores share their caches (every tensor a worker thread
writes is otherwise read across the chip), and a virtual machine's host may change that at will
(docs/d2ip.md, "Design decisions"). So the count is measured, not assumed: every `every`
iterations the tuner times `probe` iterations with each candidate count and keeps the fastest.

A busy machine (docs/d2ip.md, "Speed under load"). Every iteration the tuner reads how many
threads are runnable on the machine (`library.runnable`) and keeps a moving average of those
that are not its own: the machine's count less the reading thread and the pool's workers that
are awake (`library.awake_workers`, counted by the pool itself; a spinning worker is runnable).
With others waiting for a CPU, the pool's threads sleep at once instead of spinning
(`library.tune_spin(0)`), and the candidates shrink to the CPUs left free
(`library.free_cpus`): a thread that would only queue for a taken core adds a wait at every
kernel call's end. When the free CPUs that the average implies differ from those of the last
probe (by more than `HYSTERESIS` threads of the average), the tuner probes again at once: also
when the load goes away, so a probe made under load (or on one transient reading) does not
keep one thread on an idle machine. The kernels' results do not depend on their thread count
or spin, so switching changes only the speed. An `optimise.IterationHook`: `CpuExecution`
passes it to `optimise_frame`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from worker.recon.d2ip.cpu import library

SMOOTHING = 0.1  # weight of the newest sample in the moving average of other runnable threads
BUSY = 0.5  # other runnable threads (average) from which the pool stops spinning
HYSTERESIS = 0.25  # the average must pass a free-CPU boundary by this much to re-probe


class ThreadTuner:
    """`with tuner.iteration(): ...` around each Adam iteration; sets `library.tune(...)` and
    `library.tune_spin(...)`.

    `runnable`: the machine's runnable threads now (None: unknown, then the load is not
    followed); `own`: the pool's workers that are awake now (runnable as well, but this
    tuner's; None: `library.awake_workers`); `foreground`: how many other threads at normal
    priority want a CPU (None: a `library.ForegroundDemand`; its None: unknown), which bounds
    the count;
    `follow_load=False` keeps the spin and the
    candidates of an idle machine (the policy before load was followed, for comparison).
    Probing is idle when `library.set_threads` fixed the count or there is one CPU."""

    def __init__(self, probe: int = 4, every: int = 500, follow_load: bool = True,
                 runnable: Callable[[], int | None] = library.runnable,
                 own: Callable[[], int] | None = None,
                 foreground: Callable[[], float | None] | None = None) -> None:
        if probe < 2 or every < 1:
            raise ValueError("probe must be at least 2 (one warm-up) and every at least 1")
        self.probe, self.every = probe, every
        self.follow_load, self.runnable = follow_load, runnable
        self.own = own if own is not None else library.awake_workers
        self.foreground = foreground if foreground is not None else library.ForegroundDemand()
        self.since = every  # iterations since the last choice: probe at the first iteration
        self.plan: list[int] = []  # thread counts of the probe iterations still to run
        self.times: dict[int, list[float]] = {}
        self.choices: list[int] = []  # what each probe chose (for logs and tests)
        self.current: int | None = None  # the count in use (re-applied every iteration: tuners
        # of other reconstructors in this process set the same process-wide kernels)
        self.others: float | None = None  # moving average of other processes' runnable threads
        self.free_at_probe: int | None = None  # the free CPUs the last probe's candidates had

    def _free(self) -> int:
        """CPUs worth using: all this process may use, or those the others leave free."""
        if self.follow_load and self.others is not None:
            return library.free_cpus(self.others)
        return library.default_threads()

    def _candidates(self) -> tuple[int, ...]:
        n = self._free()
        return (1, n) if n > 1 and library.is_automatic() else ()

    def _follow_load(self) -> None:
        """Update the average of other runnable threads; set the spin; re-probe when the free
        CPUs change."""
        own = self.own() if self.follow_load else 0  # first: workers only fall asleep meanwhile
        now = self.runnable() if self.follow_load else None
        if now is None:
            library.tune_spin(library.SPIN_US)
            return
        sample = max(0.0, now - 1.0 - own)  # less this thread, which reads, and its workers
        foreground = self.foreground() if self.follow_load else None
        if foreground is not None:  # niced jobs, counted above, barely take a CPU from us
            sample = min(sample, foreground)
        self.others = (sample if self.others is None
                       else (1 - SMOOTHING) * self.others + SMOOTHING * sample)
        library.tune_spin(0 if self.others >= BUSY else library.SPIN_US)
        low, high = (library.free_cpus(self.others + d) for d in (HYSTERESIS, -HYSTERESIS))
        if not self.plan and low == high != self.free_at_probe:
            self.since = self.every

    @contextmanager
    def iteration(self) -> Iterator[None]:
        self._follow_load()
        if not self.plan and self.since >= self.every:
            self.plan = [c for c in self._candidates() for _ in range(self.probe)]
            self.times = {}
            self.since = 0
            self.free_at_probe = self._free()
            if not self.plan:  # one candidate (or a fixed count): nothing to time
                self.current = 1 if library.is_automatic() else None
        probing = self.plan.pop(0) if self.plan else None
        if probing is not None or self.current is not None:
            library.tune(probing or self.current)
        t0 = time.perf_counter()
        yield
        elapsed = time.perf_counter() - t0
        if probing is None:
            self.since += 1
            return
        self.times.setdefault(probing, []).append(elapsed)
        if not self.plan:  # all candidates timed: keep the fastest (first iteration: warm-up)
            self.current = min(self.times, key=lambda c: statistics.median(self.times[c][1:]))
            library.tune(self.current)
            self.choices.append(self.current)
