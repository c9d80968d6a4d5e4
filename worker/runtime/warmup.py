"""The main method's warm-start progress per session (issue 16): while a long warm start runs
inside the main method's `push` (D2IP's UPWS, minutes on a CPU), the viewer shows "D2IP warm
start 40 %" instead of a silent black pane.

`WarmupReporter` is the session main reconstructor's `on_warmup` hook: it writes
`WarmupProgress` into the session's progress hash (field `warmup`), fenced like every other
write, at most once per `interval_s` and always at the last iteration (`done == total`, which
stays there as the record that the warm start is over). A Redis error skips one update (the
warm start goes on; the next one comes `interval_s` later); a lost lease stops the session as
anywhere else (`LeaseLost` out of `push`).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from service.contract.codecs import WarmupProgress
from service.contract.fields import ProgressField

if TYPE_CHECKING:
    from worker.runtime.fenced import Fenced
    from worker.runtime.lease import Lease

log = logging.getLogger("eitmon.worker")

INTERVAL_S = 1.0


class WarmupReporter:
    """`on_warmup(step, done, total)` of one session's main reconstructor."""

    def __init__(self, fenced: Fenced, lease: Lease, interval_s: float = INTERVAL_S) -> None:
        self.fenced, self.lease, self.interval_s = fenced, lease, interval_s
        self.last = -float("inf")  # monotonic time of the last write

    def __call__(self, step: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self.last < self.interval_s:
            return
        self.last = now
        progress = WarmupProgress(step=step, done=done, total=total, updated_at=time.time())
        try:
            self.fenced.commit(self.lease.sid, self.lease.value,
                               progress={ProgressField.WARMUP.value: progress.to_json()})
        except RedisError as e:
            log.warning("session %s: warm-start progress not written (%s)", self.lease.sid,
                        type(e).__name__)
