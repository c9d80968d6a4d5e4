"""The API, a worker and a viewer together: every accepted frame becomes a volume."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from service import wire
from worker.runtime.local import start_api

if TYPE_CHECKING:
    from conftest import Bed, Running

N = 30


def test_every_frame_reaches_the_viewer_and_the_counters_add_up(
        bed: Bed, in_process: Callable[..., Running], lsq: dict[str, Any]) -> None:
    sid = bed.create()
    in_process(lsq)
    frames = bed.frames(N)
    volumes: dict[int, np.ndarray] = {}
    previews: set[int] = set()
    with bed.viewer(sid) as ws:
        time.sleep(0.3)  # the API's reader is waiting on the results stream
        for k in range(0, N, 5):
            bed.post(sid, frames[k:k + 5], k)
        while len(volumes) < N or len(previews) < N:
            meta, binary = bed.receive(ws)
            header, vol = wire.unpack_volume(binary)
            assert header.seq == meta["seq"] and meta["method"] == "tikhonov"
            if meta["kind"] == "volume":
                volumes[meta["seq"]] = vol.astype(np.float32)
            else:
                previews.add(meta["seq"])
    bed.wait(lambda: bed.settled(sid, N), "the counters")
    assert bed.counters(sid)["coalesced"] == 0
    expected = bed.expected(frames)
    got = np.stack([volumes[s] for s in range(N)])
    np.testing.assert_allclose(got, expected, rtol=2e-2, atol=2e-3 * np.abs(expected).max())
    info = bed.info(sid)
    assert info["lag"]["frames"] == 0 and info["worker"]["id"] == "w1"


def test_realtime_policy_coalesces_a_backlog_and_counts_it(
        bed: Bed, in_process: Callable[..., Running], lsq: dict[str, Any]) -> None:
    sid = bed.create(realtime="realtime")
    bed.post(sid, bed.frames(40), 0)  # queued before any worker runs: a backlog
    in_process(lsq)
    bed.wait(lambda: bed.settled(sid, 40), "the counters")
    counters = bed.counters(sid)
    assert counters["coalesced"] > 0
    assert counters["reconstructed"] + counters["coalesced"] == counters["accepted"] == 40
    assert bed.results(sid)[-1].seq == 39  # the newest frame is always reconstructed


def test_api_restart_while_the_worker_runs(bed: Bed, in_process: Callable[..., Running],
                                           lsq: dict[str, Any], redis_url: str) -> None:
    api = start_api(redis_url, bed.secret, quiet=True)
    try:
        bed.base = api.url
        sid = bed.create()
        in_process(lsq)
        frames = bed.frames(20)
        bed.post(sid, frames[:10], 0)
        api.stop()
        api = start_api(redis_url, bed.secret, port=int(api.url.rsplit(":", 1)[1]), quiet=True)
        with bed.viewer(sid) as ws:
            bed.post(sid, frames[10:], 10)
            bed.wait(lambda: bed.settled(sid, 20), "the counters")
            for _ in range(50):  # the latest volume at once, then the new ones
                meta, _ = bed.receive(ws)
                if meta["seq"] == 19 and meta["kind"] == "volume":
                    break
            else:
                raise AssertionError("the last volume never reached the viewer")
    finally:
        api.stop()
    assert [r.seq for r in bed.results(sid)] == list(range(20))


def test_frames_against_a_zero_reference_are_counted_never_published(
        bed: Bed, in_process: Callable[..., Running], lsq: dict[str, Any]) -> None:
    sid = bed.create(reference={"mode": "first_n", "frames": 1})
    frames = bed.frames(6)
    frames[0] = 0.0  # the belt's first frame, the reference, is all zero
    bed.post(sid, frames, 0)
    in_process(lsq)
    bed.wait(lambda: bed.settled(sid, 6), "the counters")
    counters = bed.counters(sid)
    assert counters["dropped"] == counters["dropped:non_finite"] == 6
    assert counters.get("reconstructed", 0) == 0
    published = bed.results(sid, "volume") + bed.results(sid, "preview")
    assert all(np.isfinite(r.volume).all() for r in published)
    assert bed.info(sid)["lag"]["frames"] == 0


def test_a_slow_session_setup_delays_the_viewer_without_failing(
        bed: Bed, in_process: Callable[..., Running], test_methods: dict[str, Any]) -> None:
    """As on a loaded machine: the session's setup takes longer than any fixed receive
    timeout of the past (10 s); the waits follow the worker's progress instead."""
    def slow(model: Any) -> Any:
        time.sleep(6)  # the preview's and the main method's: 12 s of setup
        return test_methods["PseudoInverse"](model)

    sid = bed.create()
    in_process({"tikhonov": slow})
    with bed.viewer(sid) as ws:
        bed.post(sid, bed.frames(1), 0)
        meta, _ = bed.receive(ws)
    assert meta["seq"] == 0


def test_background_work_runs_between_frames(
        bed: Bed, in_process: Callable[..., Running], test_methods: dict[str, Any]) -> None:
    adapts = test_methods["Adapts"]
    adapts.INSTANCES.clear()
    sid = bed.create(method="d2ip", realtime="realtime")
    in_process({"tikhonov": test_methods["PseudoInverse"], "d2ip": adapts})
    frames = bed.frames(6)
    for k in range(6):  # one frame at a time: each is reconstructed, then the steps run
        bed.post(sid, frames[k:k + 1], k)
        bed.wait(lambda k=k: bed.settled(sid, k + 1), "the frame")
        bed.wait(lambda: adapts.INSTANCES[-1].since_frame == adapts.BUDGET, "the steps")
    counters = bed.counters(sid)
    assert counters["reconstructed"] == 6 and counters["coalesced"] == 0
    main = adapts.INSTANCES[-1]
    assert main.steps_before_frame == [adapts.BUDGET * k for k in range(6)]
