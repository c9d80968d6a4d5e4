"""Liveness: a heartbeat key that exists only while the compute thread makes progress.

The compute thread `tick`s a `ComputeClock` after every unit of work and every idle wait; the
control thread calls `Heartbeat.beat` every lease renewal, which writes
`eitmon:heartbeat:<worker>` = the unix time, with a time to live of `EITMON_HEARTBEAT_TTL_S`,
only while the last tick is at most `EITMON_STALL_TIMEOUT_S` old. A compute thread stuck in one
step (or a stuck control thread, or no Redis) thus lets the key expire, and `liveness` (the
probe: `eitmon worker --check-liveness`) fails.
"""

from __future__ import annotations

import logging
import socket
import threading
import time

from redis import Redis
from redis.exceptions import RedisError

from service.contract.keys import heartbeat_key
from worker.runtime.config import WorkerConfig

log = logging.getLogger("eitmon.worker")


class ComputeClock:
    """When the compute thread last finished a step or an idle wait."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = time.monotonic()

    def tick(self) -> None:
        with self._lock:
            self._last = time.monotonic()

    def age(self) -> float:
        """Seconds since the last tick."""
        with self._lock:
            return time.monotonic() - self._last


class Heartbeat:
    """Writes the worker's heartbeat key while its compute thread is not stalled."""

    def __init__(self, redis: Redis, worker: str, clock: ComputeClock, stall_timeout_s: float,
                 ttl_s: float) -> None:
        self.redis, self.key, self.clock = redis, heartbeat_key(worker), clock
        self.stall_timeout_s, self.ttl_ms = stall_timeout_s, int(ttl_s * 1000)
        self.stalled = False

    def beat(self) -> bool:
        """Write the key unless the compute thread is stalled; whether it was written."""
        age = self.clock.age()
        stalled = age > self.stall_timeout_s
        if stalled != self.stalled:
            self.stalled = stalled
            if stalled:
                log.error("compute thread stalled for %.0f s: heartbeat stopped", age)
            else:
                log.info("compute thread going again: heartbeat resumed")
        if stalled:
            return False
        try:
            self.redis.set(self.key, repr(time.time()), px=self.ttl_ms)
        except RedisError as e:
            log.warning("heartbeat not written: %s", type(e).__name__)
            return False
        return True


def liveness(redis: Redis, cfg: WorkerConfig) -> tuple[bool, str]:
    """(alive, why) from the heartbeat: the key of `EITMON_WORKER_NAME` when it is set, else
    those of the workers of this host under the default name `<hostname>-<pid>` (a container's
    worker is another process than its probe); alive when there is one and none is older than
    `EITMON_HEARTBEAT_TTL_S`."""
    if "worker_name" in cfg.model_fields_set:
        keys = [heartbeat_key(cfg.worker_name)]
    else:
        pattern = heartbeat_key(f"{socket.gethostname()}-*")
        keys = sorted({k.decode() for k in redis.scan_iter(match=pattern, count=1000)})
        if not keys:
            return False, f"no heartbeat matching {pattern}"
    now = time.time()
    for key, value in zip(keys, redis.mget(keys), strict=True):
        if value is None:
            return False, f"no heartbeat at {key}"
        age = now - float(value)
        if age > cfg.heartbeat_ttl_s:
            return False, f"{key} is stale ({age:.1f} s old)"
    return True, f"{len(keys)} heartbeat(s) fresh"
