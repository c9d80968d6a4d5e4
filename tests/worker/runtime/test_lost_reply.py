"""Entries pending in the group that the owner never took: a read whose reply never reached
the worker (valkey executed the worker's XREADGROUP, so the entries are pending with that
worker, and was killed before it replied, then restarted from its AOF; `eitmon bench
durability` met this, docs/deployment.md, "Durability"), and stragglers (read by a fenced-out
worker). The owner's intake recovers both, each entry exactly once."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from service.contract.keys import WORKER_GROUP, frames_key
from worker.runtime.intake import BLOCK_MS
from worker.runtime.local import Child

if TYPE_CHECKING:
    from conftest import Bed


@pytest.mark.parametrize("reader", ["w1", "w0"], ids=["lost-reply", "straggler"])
def test_entries_pending_but_never_taken_are_processed_once(
        bed: Bed, workers: Callable[..., Child], reader: str) -> None:
    sid = bed.create()
    frames = bed.frames(10)
    # a lease far longer than the pause below: nobody takes the session over meanwhile
    w1 = workers("w1", EITMON_LEASE_MS="30000", EITMON_LEASE_RENEW_MS="1000")
    bed.post(sid, frames[:5], 0)
    bed.wait(lambda: bed.settled(sid, 5), "w1 to process the first frames")
    w1.process.send_signal(signal.SIGSTOP)
    try:
        time.sleep(3 * BLOCK_MS / 1000)  # w1's blocked read times out on the server
        bed.post(sid, frames[5:], 5)
        # w1's next read as valkey executed it, its reply lost (w1 never sees it); or a read by
        # a fenced-out worker w0
        if not bed.redis.xreadgroup(WORKER_GROUP, reader, {frames_key(sid): ">"}):
            pytest.fail("w1 read the new entries itself: the lost reply was not staged")
    finally:
        w1.process.send_signal(signal.SIGCONT)
    bed.wait(lambda: bed.settled(sid, 10), "w1 to process the entries pending with " + reader,
             stall=20.0)
    for kind in ("preview", "volume"):  # every frame taken exactly once
        assert sorted(r.seq for r in bed.results(sid, kind)) == list(range(10)), kind
