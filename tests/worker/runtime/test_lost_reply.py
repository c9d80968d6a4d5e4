"""A read whose reply never reached the worker: valkey executed the worker's XREADGROUP (the
entries are now pending with that worker) and was killed before it replied, then restarted
from its AOF. `eitmon bench durability` met this (docs/deployment.md, "Durability")."""

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


@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="the intake reads only new entries ('>'): entries delivered to its "
                          "own consumer whose reply was lost stay pending while it lives")
def test_entries_whose_read_reply_was_lost_are_still_processed(
        bed: Bed, workers: Callable[..., Child]) -> None:
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
        # w1's next read as valkey executed it; its reply is lost (w1 never sees it)
        if not bed.redis.xreadgroup(WORKER_GROUP, "w1", {frames_key(sid): ">"}):
            pytest.fail("w1 read the new entries itself: the lost reply was not staged")
    finally:
        w1.process.send_signal(signal.SIGCONT)
    bed.wait(lambda: bed.settled(sid, 10), "w1 to process the entries of the lost reply",
             stall=20.0)
