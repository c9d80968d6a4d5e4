"""The control thread: renew leases, claim new sessions, take over orphaned ones, evict idle
ones.

- Leases are renewed every `EITMON_LEASE_RENEW_MS`; a lease that is no longer ours, or that
  could not be renewed for a whole lease period (Redis unreachable), drops its session. The
  heartbeat is written at the same pace (`health.py`).
- New sessions: `XREADGROUP GROUP eitmon-workers <worker> COUNT <free slots> ... STREAMS
  eitmon:control >`; the entry stays pending while the session is owned. An entry whose session
  is closed or gone is acknowledged and deleted.
- Takeover scan (every `EITMON_SCAN_INTERVAL_S`): sessions of the index `eitmon:sessions`
  (open and closed, not failed) that have no lease but have work (pending or undelivered
  frame-stream entries) are acquired; the session's control entry is XCLAIMed to this worker.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from redis import Redis
from redis.exceptions import RedisError, ResponseError

from service.contract.codecs import decode_control, stream_id_key, text
from service.contract.fields import SessionField, SessionStatus
from service.contract.keys import (
    CONTROL_STREAM,
    SESSIONS_INDEX,
    WORKER_GROUP,
    frames_key,
    lease_key,
    session_key,
)
from worker.runtime.config import WorkerConfig
from worker.runtime.health import Heartbeat
from worker.runtime.lease import Leases
from worker.runtime.registry import SessionRegistry
from worker.runtime.startup import Setup

log = logging.getLogger("eitmon.worker")

FAILED = SessionStatus.FAILED.value.encode()


def has_work(groups: Any, newest: Any) -> bool:
    """True when the frame stream has entries pending or not yet delivered to the group."""
    if isinstance(groups, Exception) or isinstance(newest, Exception) or not newest:
        return False
    for group in groups:
        if text(group["name"]) == WORKER_GROUP:
            return group["pending"] > 0 or stream_id_key(text(newest[0][0])) > stream_id_key(
                text(group["last-delivered-id"]))
    return False


class Control:
    """Runs until the worker is done (after the compute thread has released its sessions)."""

    def __init__(self, cfg: WorkerConfig, redis: Redis, leases: Leases,
                 registry: SessionRegistry, setup: Setup, heartbeat: Heartbeat,
                 stopping: threading.Event, done: threading.Event) -> None:
        self.cfg, self.redis, self.leases, self.registry = cfg, redis, leases, registry
        self.setup, self.heartbeat = setup, heartbeat
        self.stopping, self.done = stopping, done
        self.consumer = cfg.worker_name
        self.renewed_at = time.monotonic()

    def run(self) -> None:
        cfg = self.cfg
        next_renew = next_scan = 0.0
        while not self.done.is_set():
            now = time.monotonic()
            if now >= next_renew:
                self.renew()
                self.heartbeat.beat()
                next_renew = now + cfg.lease_renew_ms / 1000
            if self.stopping.is_set():
                self.done.wait(min(max(next_renew - now, 0.01), 0.1))
                continue
            try:
                wait = min(next_renew, next_scan, now + 0.25) - now  # notice a stop soon
                self.claim_new(max(int(wait * 1000), 1))
                if time.monotonic() >= next_scan:
                    self.scan()
                    self.evict_idle()
                    next_scan = time.monotonic() + cfg.scan_interval_s
            except RedisError as e:
                log.warning("control: %s; retrying", type(e).__name__)
                self.stopping.wait(0.5)

    def renew(self) -> None:
        held = self.registry.leases()
        try:
            ok = self.leases.renew(held)
        except RedisError as e:
            if time.monotonic() - self.renewed_at > self.cfg.lease_ms / 1000:
                for lease in held:
                    self.registry.lose(lease, f"lease not renewed ({type(e).__name__})")
            return
        self.renewed_at = time.monotonic()
        for lease, good in zip(held, ok, strict=True):
            if not good:
                self.registry.lose(lease, "lease lost")

    def claim_new(self, block_ms: int) -> None:
        free = self.registry.free_slots()
        if free <= 0:
            self.stopping.wait(block_ms / 1000)
            return
        try:
            reply = self.redis.xreadgroup(WORKER_GROUP, self.consumer,
                                          {CONTROL_STREAM: ">"}, count=free,
                                          block=block_ms)
        except ResponseError as e:
            if "NOGROUP" not in str(e):
                raise
            self.ensure_group()
            return
        for _, entries in reply or []:
            for control_id, fields in entries:
                _, sid, _ = decode_control(fields)
                self.claim(sid, text(control_id))

    def ensure_group(self) -> None:
        try:
            self.redis.xgroup_create(CONTROL_STREAM, WORKER_GROUP, id="0",
                                     mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    def claim(self, sid: str, control_id: str) -> None:
        """A new session from the control stream."""
        status = self.redis.hget(session_key(sid), SessionField.STATUS.value)
        if status != SessionStatus.OPEN.value.encode():
            with self.redis.pipeline(transaction=False) as pipe:
                pipe.xack(CONTROL_STREAM, WORKER_GROUP, control_id)
                pipe.xdel(CONTROL_STREAM, control_id)
                pipe.execute()
            return
        lease = self.leases.acquire(sid)
        if lease is not None:
            self.setup.submit(lease, "claimed")

    def scan(self) -> None:
        """Take over sessions without a lease that have work, oldest first (never a failed
        one)."""
        free = self.registry.free_slots()
        if free <= 0:
            return
        sids = [text(sid) for sid in self.redis.zrange(SESSIONS_INDEX, 0, -1)]
        sids = [sid for sid in sids if not self.registry.busy_with(sid)]
        with self.redis.pipeline(transaction=False) as pipe:
            for sid in sids:
                pipe.exists(lease_key(sid))
            unleased = [sid for sid, held in zip(sids, pipe.execute(), strict=True) if not held]
        fields = [SessionField.CONTROL_ID.value, SessionField.STATUS.value]
        with self.redis.pipeline(transaction=False) as pipe:
            for sid in unleased:
                pipe.xinfo_groups(frames_key(sid))
                pipe.xrevrange(frames_key(sid), count=1)
                pipe.hmget(session_key(sid), fields)
            replies = pipe.execute(raise_on_error=False)
        for k, sid in enumerate(unleased):
            groups, newest, session_fields = replies[3 * k: 3 * k + 3]
            if free <= 0 or not has_work(groups, newest) or isinstance(session_fields, Exception):
                continue
            control_id, status = session_fields
            if status == FAILED:
                continue
            lease = self.leases.acquire(sid)
            if lease is None:
                continue
            if isinstance(control_id, bytes):
                self.redis.xclaim(CONTROL_STREAM, WORKER_GROUP, self.consumer,
                                  0, [control_id], justid=True)
            self.setup.submit(lease, "took over")
            free -= 1

    def evict_idle(self) -> None:
        now = time.monotonic()
        for session in self.registry.sessions():
            if (session.ending is None and session.idle
                    and now - session.last_activity > self.cfg.idle_evict_s):
                session.ending = "evicted"
                self.registry.notify()
