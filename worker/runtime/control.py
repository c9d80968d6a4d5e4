"""The control thread: renew leases, claim new sessions, take over orphaned ones, evict idle
ones, and recover frames stranded with a fenced-out worker.

- Leases are renewed every `EITMON_LEASE_RENEW_MS`; a lease that is no longer ours, or that
  could not be renewed for a whole lease period (Redis unreachable), drops its session.
- New sessions: `XREADGROUP GROUP eitmon-workers <worker> COUNT <free slots> ... STREAMS
  eitmon:control >`; the entry stays pending while the session is owned. An entry whose session
  is closed or gone is acknowledged and deleted.
- Takeover scan (every `EITMON_SCAN_INTERVAL_S`): sessions of the index `eitmon:sessions`
  (open and closed) that have no lease but have work (pending or undelivered frame-stream
  entries) are acquired; the session's control entry is XCLAIMed to this worker.
- Stragglers: entries of an owned session pending with another consumer (a worker that read
  them after its lease was taken) are XCLAIMed and handed to the intake thread.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError, ResponseError

from service.contract.codecs import decode_control
from service.contract.fields import SessionField
from service.contract.keys import (
    CONTROL_STREAM,
    SESSIONS_INDEX,
    WORKER_GROUP,
    frames_key,
    lease_key,
    session_key,
)
from worker.runtime.intake import text
from worker.runtime.startup import id_key

if TYPE_CHECKING:
    from worker.runtime.loop import Worker

log = logging.getLogger("eitmon.worker")


def has_work(groups: Any, newest: Any) -> bool:
    """True when the frame stream has entries pending or not yet delivered to the group."""
    if isinstance(groups, Exception) or isinstance(newest, Exception) or not newest:
        return False
    for g in groups:
        if text(g["name"]) == WORKER_GROUP:
            return g["pending"] > 0 or id_key(text(newest[0][0])) > id_key(
                text(g["last-delivered-id"]))
    return False


class Control:
    """Runs until the worker is done (after the compute thread has released its sessions)."""

    def __init__(self, w: Worker) -> None:
        self.w = w
        self.renewed_at = time.monotonic()

    def run(self) -> None:
        cfg = self.w.cfg
        next_renew = next_scan = 0.0
        while not self.w.done.is_set():
            now = time.monotonic()
            if now >= next_renew:
                self.renew()
                next_renew = now + cfg.lease_renew_ms / 1000
            if self.w.stopping.is_set():
                self.w.done.wait(min(max(next_renew - now, 0.01), 0.1))
                continue
            try:
                wait = min(next_renew, next_scan, now + 0.25) - now  # notice a stop soon
                self.claim_new(max(int(wait * 1000), 1))
                if time.monotonic() >= next_scan:
                    self.scan()
                    self.stragglers()
                    self.evict_idle()
                    next_scan = time.monotonic() + cfg.scan_interval_s
            except RedisError as e:
                log.warning("control: %s; retrying", type(e).__name__)
                self.w.stopping.wait(0.5)

    def renew(self) -> None:
        held = self.w.held_leases()
        try:
            ok = self.w.leases.renew(held)
        except RedisError as e:
            if time.monotonic() - self.renewed_at > self.w.cfg.lease_ms / 1000:
                for lease in held:
                    self.w.lose(lease, f"lease not renewed ({type(e).__name__})")
            return
        self.renewed_at = time.monotonic()
        for lease, good in zip(held, ok, strict=True):
            if not good:
                self.w.lose(lease, "lease lost")

    def claim_new(self, block_ms: int) -> None:
        free = self.w.free_slots()
        if free <= 0:
            self.w.stopping.wait(block_ms / 1000)
            return
        try:
            reply = self.w.redis.xreadgroup(WORKER_GROUP, self.w.name,
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
            self.w.redis.xgroup_create(CONTROL_STREAM, WORKER_GROUP, id="0",
                                       mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    def claim(self, sid: str, control_id: str) -> None:
        """A new session from the control stream."""
        status = self.w.redis.hget(session_key(sid), SessionField.STATUS.value)
        if status != b"open":
            with self.w.redis.pipeline(transaction=False) as p:
                p.xack(CONTROL_STREAM, WORKER_GROUP, control_id)
                p.xdel(CONTROL_STREAM, control_id)
                p.execute()
            return
        lease = self.w.leases.acquire(sid)
        if lease is not None:
            self.w.start(lease, "claimed")

    def scan(self) -> None:
        """Take over sessions without a lease that have work, oldest first."""
        free = self.w.free_slots()
        if free <= 0:
            return
        sids = [text(s) for s in self.w.redis.zrange(SESSIONS_INDEX, 0, -1)]
        sids = [s for s in sids if not self.w.holds(s)]
        with self.w.redis.pipeline(transaction=False) as p:
            for sid in sids:
                p.exists(lease_key(sid))
            unleased = [s for s, held in zip(sids, p.execute(), strict=True) if not held]
        with self.w.redis.pipeline(transaction=False) as p:
            for sid in unleased:
                p.xinfo_groups(frames_key(sid))
                p.xrevrange(frames_key(sid), count=1)
                p.hget(session_key(sid), SessionField.CONTROL_ID.value)
            replies = p.execute(raise_on_error=False)
        for k, sid in enumerate(unleased):
            groups, newest, control_id = replies[3 * k: 3 * k + 3]
            if free <= 0 or not has_work(groups, newest):
                continue
            lease = self.w.leases.acquire(sid)
            if lease is None:
                continue
            if isinstance(control_id, bytes):
                self.w.redis.xclaim(CONTROL_STREAM, WORKER_GROUP, self.w.name,
                                    0, [control_id], justid=True)
            self.w.start(lease, "took over")
            free -= 1

    def stragglers(self) -> None:
        """Claim owned sessions' entries pending with other consumers; the intake feeds them."""
        sessions = self.w.sessions()
        with self.w.redis.pipeline(transaction=False) as p:
            for s in sessions:
                p.xpending(frames_key(s.sid), WORKER_GROUP)
            summaries = p.execute(raise_on_error=False)
        for s, summary in zip(sessions, summaries, strict=True):
            if isinstance(summary, Exception):
                continue
            for consumer in summary["consumers"]:
                if text(consumer["name"]) == self.w.name:
                    continue
                key = frames_key(s.sid)
                ids = [r["message_id"] for r in self.w.redis.xpending_range(
                    key, WORKER_GROUP, "-", "+", 1000, consumername=consumer["name"])]
                if ids:
                    entries = self.w.redis.xclaim(key, WORKER_GROUP, self.w.name, 0, ids)
                    log.warning("session %s: %d entries recovered from %s", s.sid, len(ids),
                                text(consumer["name"]))
                    self.w.late.put((s, entries))

    def evict_idle(self) -> None:
        now = time.monotonic()
        for s in self.w.sessions():
            if s.ending is None and s.idle and now - s.last_activity > self.w.cfg.idle_evict_s:
                s.ending = "evicted"
                self.w.notify()
