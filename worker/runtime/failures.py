"""Pessimistic execution: a session whose work raises fails alone, never the worker.

An exception from a session's setup (forward model, methods, checkpoint restore, replay), its
intake (decoding, reference) or its main method (`push`, checkpoint) ends this attempt: one
fenced Lua script (`service.contract.scripts.FAIL`) counts it (`HINCRBY
eitmon:counters:{sid} failures 1`) and releases the lease,
and the worker forgets the session and frees its resources. The frames the attempt had not
committed stay pending, so the next attempt (any worker's takeover scan; this worker only after
`EITMON_RETRY_BACKOFF_S`) restores the last checkpoint and replays them. The
`EITMON_MAX_SESSION_FAILURES`-th failure marks the session failed instead, in the same script
(and so does the first failure of a model build, `builds.py`, which would fail every time):
status `failed`, `failure_reason` (exception type and message), its control-stream entry
acknowledged and deleted so that no worker claims it again, and its keys put under the
retention expiry, as closing does. A lost lease or an unreachable Redis is not the session's
fault and counts nothing.
"""

from __future__ import annotations

import logging
import time

from redis import Redis
from redis.exceptions import RedisError

from service.contract.keys import (
    CONTROL_STREAM,
    WORKER_GROUP,
    counters_key,
    lease_key,
    session_key,
    session_keys,
)
from service.contract.scripts import registered
from worker.runtime.fenced import LeaseLost, check
from worker.runtime.lease import Lease
from worker.runtime.registry import SessionRegistry

log = logging.getLogger("eitmon.worker")

REASON_CHARS = 200


def reason(error: BaseException) -> str:
    """What the session's `failure_reason` says: the exception's type and message."""
    text = f"{type(error).__name__}: {error}".strip().rstrip(":")
    return text if len(text) <= REASON_CHARS else text[:REASON_CHARS - 3] + "..."


class SessionFailures:
    """Counts a worker's session failures in Redis and quarantines a session after the last."""

    def __init__(self, redis: Redis, registry: SessionRegistry, max_failures: int,
                 retention_s: int, backoff_s: float) -> None:
        self.registry = registry
        self.max_failures, self.retention_s, self.backoff_s = max_failures, retention_s, backoff_s
        self._fail = registered(redis).fail

    def record(self, lease: Lease, error: Exception, stage: str, final: bool = False) -> None:
        """`error` ended this attempt at the session (`stage`: setup, intake or compute);
        `final`: it would end every attempt (a model that cannot be built), so the session is
        marked failed now."""
        sid = lease.sid
        log.error("session %s: %s failed (epoch %d)", sid, stage, lease.epoch,
                  exc_info=(type(error), error, error.__traceback__))
        self.registry.back_off(sid, self.backoff_s)
        try:
            failures = self.count(lease, reason(error), 1 if final else self.max_failures)
        except LeaseLost as e:
            self.registry.lose(lease, e)
            return
        except RedisError as e:  # the lease expires by itself; the next owner tries again
            self.registry.drop(lease, "failed")
            log.warning("session %s: failure not recorded (%s); released by expiry", sid,
                        type(e).__name__)
            return
        self.registry.drop(lease, "failed")
        if final or failures >= self.max_failures:
            log.error("session %s: failed %d times; marked failed (%s)", sid, failures,
                      reason(error))
        else:
            log.warning("session %s: failure %d of %d; released for a retry from its "
                        "checkpoint", sid, failures, self.max_failures)

    def count(self, lease: Lease, why: str, max_failures: int) -> int:
        """Run the fenced failure script (marking the session failed from `max_failures`
        failures on); the session's failure count."""
        sid = lease.sid
        keys = [lease_key(sid), session_key(sid), counters_key(sid),
                CONTROL_STREAM, *session_keys(sid)]
        expires_at = time.time() + self.retention_s
        return check(sid, self._fail(keys=keys, args=[lease.value, max_failures, why,
                                                      repr(expires_at), WORKER_GROUP]))
