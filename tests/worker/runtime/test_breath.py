"""The `breath` policy: the scheduling (`worker.runtime.breath`) on its own, its state through a
checkpoint, and a worker running it end to end (tidal results, parameters, counters, a
restore from the checkpoint in the middle of a breath)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from service.contract.codecs import decode_parameters
from service.contract.fields import ProgressField
from service.contract.keys import parameters_key, progress_key
from worker.runtime import checkpoint
from worker.runtime.breath import BreathEnd, BreathTracker, Event, Tidal
from worker.ventilation.signal import global_impedance

if TYPE_CHECKING:
    from conftest import Bed, Running

RATE = 20.0
PERIOD = 4.4  # s


def curve(n: int, seed: int = 0) -> np.ndarray:
    """A breathing global curve: breaths of PERIOD s, a heartbeat and noise."""
    t = np.arange(n) / RATE
    rng = np.random.default_rng(seed)
    return (np.sin(2 * np.pi * t / PERIOD - np.pi / 2) + 0.08 * np.sin(2 * np.pi * 1.2 * t)
            + 0.03 * rng.standard_normal(n))


def feed(tracker: BreathTracker, values: np.ndarray, start: int = 0) -> list[tuple[int, Event]]:
    """(frame index at which it came, event); each frame's dv holds its index."""
    return [(i, e) for i in range(start, values.size)
            for e in tracker.push(f"{i}-0", i, i / RATE, np.array([float(i), 1.0]), values[i])]


def key(event: Event) -> tuple[Any, ...]:
    if isinstance(event, Tidal):
        return ("tidal", event.expiration.index, event.inspiration.index)
    b = event.breath
    return ("end", b.start, b.end_inspiration, b.end, len(event.samples))


def test_tidal_at_each_end_inspiration_and_each_breath_ends() -> None:
    values = curve(1200)
    events = feed(BreathTracker(), values)
    tidals = [(i, e) for i, e in events if isinstance(e, Tidal)]
    ends = [e for _, e in events if isinstance(e, BreathEnd)]
    assert len(tidals) >= 10 and len(ends) >= len(tidals) - 1
    for came, tidal in tidals:
        peak = tidal.inspiration.index
        assert 0 < (came - peak) / RATE <= 1.0  # reported within a second of the peak
        assert values[peak] > values[tidal.expiration.index]
        np.testing.assert_array_equal(tidal.dv, [peak - tidal.expiration.index, 0.0])
    for end in ends:  # every breath's frames, start to end, its tidal pair among the tidals
        assert [s.index for s in end.samples] == list(range(end.breath.start, end.breath.end + 1))
        assert ("tidal", end.breath.start, end.breath.end_inspiration) in map(key, [
            t for _, t in tidals])


def test_state_survives_a_checkpoint_mid_breath(tmp_path: Path) -> None:
    values = curve(1200, seed=1)
    whole = [key(e) for _, e in feed(BreathTracker(), values)]
    first = BreathTracker()
    before = [key(e) for _, e in feed(first, values[:610])]
    assert first.expiration is not None and first.kept  # an open breath and its frames
    name = checkpoint.write(tmp_path, checkpoint.Checkpoint(
        sid="a" * 32, epoch=1, stream_id="609-0", main_method="m", main_state={},
        reference=None, breath=first.state_dict()))
    restored = BreathTracker()
    restored.load_state_dict(checkpoint.read(tmp_path, name).breath)
    after = [key(e) for _, e in feed(restored, values, start=610)]
    assert before + after == whole


N = 640  # 32 s at 20 frames/s
PERIOD_FRAMES = 88


def offline_tidals(bed: Bed, frames: np.ndarray) -> list[tuple[int, int]]:
    """(end-expiration seq, end-inspiration seq) pairs of the scheduling run offline on the
    preview's global curve (the test method is also the preview)."""
    values = global_impedance(bed.expected(frames), bed.model.mask)
    return [(e.expiration.seq, e.inspiration.seq)
            for _, e in feed(BreathTracker(), values) if isinstance(e, Tidal)]


def test_worker_publishes_tidal_images_and_parameters_and_survives_a_restore(
        bed: Bed, in_process: Callable[..., Running], lsq: dict[str, Any],
        tmp_path: Path) -> None:
    sid = bed.create(realtime="breath", position="prone")
    frames = bed.frames(N, period=PERIOD_FRAMES)
    in_process(lsq, idle_evict_s=0.5)
    half = 385  # between a breath's end-expiration and end-inspiration (offline_tidals)
    for k in range(0, half, 110):
        bed.post(sid, frames[k:min(k + 110, half)], k)
    bed.wait(lambda: bed.settled(sid, half), "the first half")
    bed.wait(lambda: bed.info(sid)["worker"] is None, "the idle session to be evicted")
    name = bed.redis.hget(progress_key(sid), ProgressField.CHECKPOINT.value).decode()
    assert checkpoint.read(tmp_path / "ckpt", name).breath is not None
    for k in range(half, N, 5):  # a few frames at a time: peaks confirmed in a later batch
        bed.post(sid, frames[k:k + 5], k)
    bed.wait(lambda: bed.settled(sid, N), "the second half")
    counters = bed.counters(sid)
    assert counters["coalesced"] == N and counters.get("reconstructed", 0) == 0
    assert bed.redis.hget(progress_key(sid), ProgressField.EPOCH.value) == b"2"  # restored

    offline = offline_tidals(bed, frames)
    assert len(offline) >= 5 and any(s < half < e for s, e in offline)
    tidal = bed.results(sid, "tidal")  # the newest (the previews fill the capped stream)
    pairs = [(r.breath_start_seq, r.seq) for r in tidal]
    assert len(pairs) >= 2 and pairs[-1] == offline[-1]
    assert pairs == [p for p in offline if p in pairs]  # in order (a batch may skip one)
    expected = bed.expected(frames)
    for r in tidal:
        want = expected[r.seq] - expected[r.breath_start_seq]
        np.testing.assert_allclose(r.volume.astype(np.float32), want, rtol=2e-2,
                                   atol=2e-3 * np.abs(want).max())
        assert r.breath_start_ts == pytest.approx(r.breath_start_seq * 0.05)
        assert r.method == "tikhonov"

    entries = [decode_parameters(f) for _, f in bed.redis.xrange(parameters_key(sid))]
    assert [(e.breath["seq"]["start"], e.breath["seq"]["end_inspiration"])
            for e in entries] == offline[:len(entries)]
    assert len(entries) >= len(offline) - 1  # the last breath may still be open
    assert [e.breath["index"] for e in entries] == list(range(len(entries)))
    for e in entries:
        b = e.breath
        assert e.seq == b["seq"]["end"] and b["preview"]["tiv"] > 0
        assert b["tidal"] is None or (b["tidal"]["method"] == "tikhonov"
                                      and b["tidal"]["tiv"] > 0)
        assert abs(b["preview"]["left_pct"] + b["preview"]["right_pct"] - 100) < 1e-6
        # prone (the session's position): the ventral half is the dependent one
        assert b["preview"]["dependent_pct"] == pytest.approx(b["preview"]["ventral_pct"])
        assert b["preview"]["cov_gravity_pct"] == pytest.approx(100 - b["preview"]["cov_y_pct"])
    assert sum(e.breath["tidal"] is not None for e in entries) >= len(entries) // 2



def test_a_backlog_of_breaths_gets_the_newest_one_reconstructed(
        bed: Bed, in_process: Callable[..., Running], test_methods: dict[str, Any]) -> None:
    lsq = test_methods["PseudoInverse"]

    class Slow(lsq):  # type: ignore[misc, valid-type]
        """The main method takes 2 s a breath: breaths queue up behind it."""

        def push(self, dv: np.ndarray) -> Any:
            time.sleep(2.0)
            return super().push(dv)

    sid = bed.create(realtime="breath", method="tv")
    frames = bed.frames(N, period=PERIOD_FRAMES)
    for k in range(0, N, 200):  # queued before the worker runs
        bed.post(sid, frames[k:k + 200], k)
    in_process({"tikhonov": lsq, "tv": Slow})
    bed.wait(lambda: bed.settled(sid, N), "every frame to be counted")
    offline = offline_tidals(bed, frames)
    pairs = [(r.breath_start_seq, r.seq) for r in bed.results(sid, "tidal")]
    assert pairs[-1] == offline[-1] and len(pairs) < len(offline)  # skipped, never behind
    entries = [decode_parameters(f) for _, f in bed.redis.xrange(parameters_key(sid))]
    assert len(entries) >= len(offline) - 1  # every breath's parameters all the same
    assert any(e.breath["tidal"] is None for e in entries)
