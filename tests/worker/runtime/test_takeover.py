"""Workers dying (processes), stopping (processes) and idling: sessions move on and nothing is
lost."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.contract.fields import ProgressField
from service.contract.keys import WORKER_GROUP, frames_key, lease_key, progress_key
from worker.runtime import checkpoint
from worker.runtime.fenced import CHECKPOINT
from worker.runtime.local import Child

if TYPE_CHECKING:
    from conftest import Bed, Running


def committed(bed: Bed, sid: str, directory: Path) -> checkpoint.Checkpoint:
    name = bed.redis.hget(progress_key(sid), CHECKPOINT)
    assert name, "no checkpoint committed"
    return checkpoint.read(directory, name.decode())


def released(bed: Bed, sid: str) -> bool:
    return not bed.redis.exists(lease_key(sid))


def test_sigkill_mid_stream_another_worker_takes_over(
        bed: Bed, workers: Callable[..., Child], tmp_path: Path) -> None:
    sid = bed.create()
    frames = bed.frames(30)
    first = workers("w1", LSQ_DELAY_S="0.1", EITMON_CHECKPOINT_EVERY="4")
    bed.post(sid, frames[:15], 0)  # w1 reads all 15 at once and works through them slowly
    bed.wait(lambda: bed.counters(sid).get("reconstructed", 0) >= 6, "w1 to get going")
    first.stop(signal.SIGKILL)  # with frames read but not reconstructed (pending)
    bed.post(sid, frames[15:], 15)  # accepted while no worker runs
    workers("w2")
    bed.wait(lambda: bed.settled(sid, 30), "w2 to finish the session")
    assert bed.counters(sid)["coalesced"] == 0  # policy "complete"
    assert sorted(r.seq for r in bed.results(sid)) == list(range(30))  # each exactly once
    worker = bed.info(sid)["worker"]
    assert (worker["id"], worker["epoch"]) == ("w2", 2)
    bed.close(sid)
    bed.wait(lambda: released(bed, sid), "w2 to process the close")
    final = committed(bed, sid, tmp_path / "ckpt")
    assert final.epoch == 2
    # w1's checkpoint + the frames w1 counted after it (replayed) + the rest: the state of a
    # reconstructor that saw every frame exactly once
    assert int(final.main_state["frames"]) == 30


def test_sigterm_checkpoints_releases_and_exits_0(
        bed: Bed, workers: Callable[..., Child], tmp_path: Path) -> None:
    sid = bed.create()
    frames = bed.frames(10)
    first = workers("w1")
    bed.post(sid, frames[:7], 0)
    bed.wait(lambda: bed.settled(sid, 7), "w1 to reconstruct")
    assert first.stop(signal.SIGTERM, timeout=120) == 0  # a bound: it exits in about 1 s
    assert released(bed, sid)
    ckpt = committed(bed, sid, tmp_path / "ckpt")
    last_id = bed.redis.hget(progress_key(sid), ProgressField.LAST_ID.value)
    assert ckpt.stream_id == last_id.decode() and int(ckpt.main_state["frames"]) == 7
    assert (tmp_path / "ckpt" / ckpt.name).is_file()
    workers("w2")  # takes the session over as soon as it has work again
    bed.post(sid, frames[7:], 7)
    bed.wait(lambda: bed.settled(sid, 10), "w2 to take over")
    bed.close(sid)
    bed.wait(lambda: released(bed, sid), "w2 to process the close")
    assert int(committed(bed, sid, tmp_path / "ckpt").main_state["frames"]) == 10


def test_idle_session_is_evicted_and_resumed(
        bed: Bed, in_process: Callable[..., Running], lsq: dict[str, Any],
        tmp_path: Path) -> None:
    sid = bed.create()
    frames = bed.frames(6)
    in_process(lsq, idle_evict_s=0.5)
    bed.post(sid, frames[:3], 0)
    bed.wait(lambda: bed.settled(sid, 3), "w1 to reconstruct")
    bed.wait(lambda: released(bed, sid), "the idle session to be evicted")
    assert int(committed(bed, sid, tmp_path / "ckpt").main_state["frames"]) == 3
    bed.post(sid, frames[3:], 3)
    bed.wait(lambda: bed.settled(sid, 6), "the session to resume")
    assert bed.info(sid)["worker"]["epoch"] == 2


def test_a_close_behind_the_last_frames_ends_the_session_after_them(
        bed: Bed, in_process: Callable[..., Running], lsq: dict[str, Any], tmp_path: Path
) -> None:
    sid = bed.create()
    bed.post(sid, bed.frames(8), 0)
    bed.close(sid)  # the frames and the close are all read in one go by the takeover scan
    close_id = bed.redis.xrevrange(frames_key(sid), count=1)[0][0].decode()
    run = in_process(lsq)
    bed.wait(lambda: bed.settled(sid, 8) and released(bed, sid)
             and not run.worker.registry.leases(), "the session to end after its frames")
    assert sorted(r.seq for r in bed.results(sid)) == list(range(8))  # each exactly once
    assert committed(bed, sid, tmp_path / "ckpt").stream_id == close_id
    assert bed.redis.xpending(frames_key(sid), WORKER_GROUP)["pending"] == 0
