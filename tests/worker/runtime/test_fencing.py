"""Leases and fenced writes on the real server: a worker whose lease was taken writes nothing."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pytest

from service.contract.codecs import Result, decode_result
from service.contract.keys import WORKER_GROUP, frames_key, lease_key, progress_key, results_key
from worker.runtime.fenced import CHECKPOINT, Fenced, LeaseLost
from worker.runtime.lease import Leases

if TYPE_CHECKING:
    from conftest import Bed


def volume(worker: str, epoch: int) -> Result:
    return Result.from_volume(np.ones((4, 8, 8)), seq=0, timestamp=0.0, kind="volume",
                                      method="tikhonov", iterations=1, loss=None,
                                      latency_ms=0.0, lag_frames=0, worker=worker, epoch=epoch)


def test_a_worker_whose_lease_was_taken_cannot_publish_count_or_checkpoint(bed: Bed) -> None:
    r = bed.redis
    sid = bed.create()
    bed.post(sid, bed.frames(2), 0)
    entries = r.xreadgroup(WORKER_GROUP, "old", {frames_key(sid): ">"})[0][1]
    frame_id = entries[1][0].decode()  # entries[0] is the explicit reference
    old, new, fenced = Leases(r, "old", 60_000), Leases(r, "new", 60_000), Fenced(r)
    first = old.acquire(sid)
    assert first is not None and first.epoch == 1
    assert new.acquire(sid) is None  # held
    r.delete(lease_key(sid))  # as if it expired while "old" was paused
    second = new.acquire(sid)
    assert second is not None and second.epoch == 2

    with pytest.raises(LeaseLost):
        fenced.commit(sid, first.value, counter="reconstructed", ack=[frame_id],
                      result=volume("old", 1), frame_id=frame_id)
    with pytest.raises(LeaseLost):
        fenced.commit_checkpoint(sid, first.value, f"{sid}/stale.npz", frame_id)
    assert old.renew([first]) == [False] and not old.release(first)
    assert r.xlen(results_key(sid)) == 0
    assert bed.counters(sid)["reconstructed"] == 0
    assert r.xpending(frames_key(sid), WORKER_GROUP)["pending"] == 3
    assert r.hget(progress_key(sid), CHECKPOINT) is None

    # the owner can, and a retried commit counts and publishes once
    for _ in range(2):
        fenced.commit(sid, second.value, counter="reconstructed", ack=[frame_id],
                      result=volume("new", 2), frame_id=frame_id)
    assert bed.counters(sid)["reconstructed"] == 1
    (_, fields), = r.xrange(results_key(sid))
    published = decode_result(fields)
    assert (published.worker, published.epoch, published.lag_frames) == ("new", 2, 1)
    assert published.latency_ms >= 0
    assert new.renew([second]) == [True] and new.release(second)
    assert not r.exists(lease_key(sid))
