"""The setup thread: opening the sessions this worker just got the lease of (settings, model,
reconstructors with the main one's warm-start reporter (`warmup.py`), the last checkpoint, and
the replay of the frame stream after it), each in a thread of its own, so that a cold model
build (in a separate process, `builds.py`) delays neither the sessions already running nor the
other sessions being opened. An exception while
opening is the session's failure (`failures.py`); a model that cannot be built fails the
session at once.

A closed session is never built: opened without its model at hand (neither in memory nor in
the disk cache), or closed while its model is being built (the build is cancelled), its
remaining entries are acknowledged, its frames counted as `dropped:closed_unbuilt`, and its
lease released.

Replay (also for a brand-new session, whose checkpoint position is the stream's start):
1. every entry pending in the consumer group (a previous owner read it but never acknowledged
   it) is claimed by this worker with XAUTOCLAIM: these were never counted;
2. the entries after the checkpoint position, up to the group's last delivered id, are fed in
   stream order: pending ones as new frames (preview, main method, counted), the others
   `silent` (already counted by the previous owner: they only rebuild the main state);
3. entries never delivered arrive through the intake thread's `XREADGROUP ... >`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from redis import Redis
from redis.exceptions import RedisError

from service.contract.codecs import FRAME_DTYPE, decode_frame_entry, stream_id_key, text
from service.contract.fields import DROPPED_PREFIX, DropReason, SessionField, SessionStatus
from service.contract.keys import WORKER_GROUP, frames_key, progress_key, session_key
from service.contract.session import SessionConfig
from worker.runtime import checkpoint
from worker.runtime.builds import BuildCancelled, BuildFailed
from worker.runtime.checkpoint import START, Checkpoint
from worker.runtime.failures import SessionFailures
from worker.runtime.fenced import CHECKPOINT, LeaseLost
from worker.runtime.intake import Previews, take
from worker.runtime.lease import Lease, Leases
from worker.runtime.methods import MAIN_PREFERENCE, MethodTable, ModelCache
from worker.runtime.reference import ProtocolMismatch, Reference
from worker.runtime.registry import SessionRegistry
from worker.runtime.session import Session
from worker.runtime.warmup import WarmupReporter

log = logging.getLogger("eitmon.worker")

PAGE = 512


class SessionFailed(Exception):
    """The session was marked failed (by another worker) after its lease was acquired."""


class ClosedUnbuilt(Exception):
    """The session is closed and its model was never built: it is not built now."""


class SessionOpener:
    """Builds a session from Redis and its checkpoint, and replays its frame stream."""

    def __init__(self, redis: Redis, consumer: str, checkpoints: Path, models: ModelCache,
                 methods: MethodTable, previews: Previews) -> None:
        self.redis, self.consumer, self.checkpoints = redis, consumer, checkpoints
        self.models, self.methods, self.previews = models, methods, previews

    def open(self, lease: Lease, cancelled: Callable[[], bool]) -> tuple[Session, int]:
        """The session, restored and replayed; also the number of entries replayed. A build
        of its model stops once `cancelled()`."""
        sid = lease.sid
        raw_cfg, raw_ref, status = self.redis.hmget(session_key(sid), [
            SessionField.CONFIG.value, SessionField.REFERENCE.value,
            SessionField.STATUS.value])
        if status == SessionStatus.FAILED.value.encode():
            raise SessionFailed(sid)
        config = SessionConfig.from_json(raw_cfg)
        if status != SessionStatus.OPEN.value.encode() and not self.models.available(config):
            raise ClosedUnbuilt(sid)
        ckpt = self.load_checkpoint(sid)
        main_method = self.methods.resolve(config.method, MAIN_PREFERENCE)
        if main_method != config.method:
            log.warning("session %s: method %s is not available; using %s", sid, config.method,
                        main_method)
        model, preview = self.models.acquire(config, cancelled)
        try:
            main = self.methods.build(main_method, model, tidal=config.realtime == "breath")
            main.on_warmup = WarmupReporter(self.previews.fenced, lease)
            if ckpt is not None and ckpt.main_method == main_method:
                main.load_state_dict(ckpt.main_state)
            initial = ckpt.reference if ckpt is not None else None
            if initial is None and config.reference.get("mode") == "explicit" and raw_ref:
                initial = np.frombuffer(raw_ref, dtype=FRAME_DTYPE).astype(np.float64)
            session = Session(lease=lease, config=config, model=model, preview=preview,
                              preview_method=self.models.preview_method, main=main,
                              main_method=main_method,
                              reference=Reference(config.reference, initial),
                              position=ckpt.stream_id if ckpt is not None else START)
            if config.realtime == "breath":  # scipy.signal: imported only when needed
                from worker.runtime.breath import BreathPolicy

                session.breath = BreathPolicy.for_model(model, config.position)
                if ckpt is not None and ckpt.breath is not None:
                    session.breath.load_state_dict(ckpt.breath)
            return session, self.replay(session)
        except BaseException:
            self.models.release(config)
            raise

    def is_closed(self, sid: str) -> bool:
        """True once the session is no longer open (closed, failed or gone)."""
        status = self.redis.hget(session_key(sid), SessionField.STATUS.value)
        return status != SessionStatus.OPEN.value.encode()

    def drop_unbuilt(self, lease: Lease) -> int:
        """Acknowledge every remaining entry of a closed session that has no model, counting
        its frames as `dropped:closed_unbuilt`; their number."""
        key = frames_key(lease.sid)
        pending = claim_pending(self.redis, key, self.consumer)
        entries: list[tuple[str, Any]] = []
        if pending:
            start, end = min(pending, key=stream_id_key), max(pending, key=stream_id_key)
            while page := self.redis.xrange(key, min=start, max=end, count=PAGE):
                entries += [(text(i), fields) for i, fields in page if text(i) in pending]
                start = "(" + text(page[-1][0])
        while reply := self.redis.xreadgroup(WORKER_GROUP, self.consumer, {key: ">"},
                                             count=PAGE):
            entries += [(text(i), fields) for i, fields in reply[0][1]]
        kinds = {i: decode_frame_entry(fields).kind for i, fields in entries}
        frames = [i for i, kind in kinds.items() if kind == "frame"]
        others = [i for i, kind in kinds.items() if kind != "frame"]
        fenced = self.previews.fenced
        fenced.commit(lease.sid, lease.value, ack=frames,
                      counter=DROPPED_PREFIX + DropReason.CLOSED_UNBUILT.value)
        fenced.commit(lease.sid, lease.value, ack=others)
        return len(frames)

    def load_checkpoint(self, sid: str) -> Checkpoint | None:
        """The committed checkpoint of the session, or None (none yet, or unreadable)."""
        name = self.redis.hget(progress_key(sid), CHECKPOINT)
        if not name:
            return None
        try:
            ckpt = checkpoint.read(self.checkpoints, text(name))
        except (OSError, ValueError, KeyError) as e:
            log.warning("session %s: checkpoint %s unreadable (%s); replaying from the start "
                        "of the frame stream", sid, text(name), type(e).__name__)
            return None
        return ckpt if ckpt.sid == sid else None

    def replay(self, session: Session) -> int:
        """Feed the entries after the checkpoint (and every pending one); their number."""
        key = frames_key(session.sid)
        pending = claim_pending(self.redis, key, self.consumer)
        end = last_delivered(self.redis, key)
        start = "-" if session.position == START else "(" + session.position
        if pending:
            first = min(pending, key=stream_id_key)
            if stream_id_key(first) <= stream_id_key(session.position):
                start = first
        fed = 0
        while True:
            page = self.redis.xrange(key, min=start, max=end, count=PAGE)
            if not page:
                return fed
            entries = [(i, fields) for i, fields in page
                       if text(i) in pending
                       or stream_id_key(i) > stream_id_key(session.position)]
            silent = {text(i) for i, _ in entries} - pending
            self.previews.publish([take(session, entries, silent=silent)])
            fed += len(entries)
            start = "(" + text(page[-1][0])


def claim_pending(redis: Redis, key: str, consumer: str) -> set[str]:
    """XAUTOCLAIM every pending entry of the group for `consumer`; their ids."""
    ids: set[str] = set()
    cursor = "0-0"
    while True:
        reply = redis.xautoclaim(key, WORKER_GROUP, consumer, 0, start_id=cursor,
                                 count=PAGE)  # redis-py drops the cursor of JUSTID replies
        cursor = text(reply[0])
        ids.update(text(i) for i, _ in reply[1])
        if cursor == "0-0":
            return ids


def last_delivered(redis: Redis, key: str) -> str:
    for group in redis.xinfo_groups(key):
        if text(group["name"]) == WORKER_GROUP:
            return text(group["last-delivered-id"])
    raise RuntimeError(f"{key}: consumer group {WORKER_GROUP} missing")


class Setup:
    """Opens the sessions whose lease was acquired (`submit`), in order, until `close`."""

    def __init__(self, opener: SessionOpener, registry: SessionRegistry, leases: Leases,
                 failures: SessionFailures, retry_backoff_s: float) -> None:
        self.opener, self.registry, self.leases = opener, registry, leases
        self.failures, self.retry_backoff_s = failures, retry_backoff_s
        self._queue: queue.Queue[tuple[Lease, str] | None] = queue.Queue()
        self._closing = threading.Event()

    def submit(self, lease: Lease, how: str) -> None:
        """A lease was just acquired (`how`: claimed, took over): open its session."""
        self.registry.hold(lease)
        self._queue.put((lease, how))

    def close(self) -> None:
        """Stop the thread; release the leases of sessions that never went live."""
        self._closing.set()  # cancels the builds in progress
        live = {session.lease for session in self.registry.sessions()}
        for lease in self.registry.leases():
            if lease not in live:
                self.release(lease)
        self._queue.put(None)

    def run(self) -> None:
        while (job := self._queue.get()) is not None:
            lease, how = job
            if self.registry.holds(lease):
                threading.Thread(target=self.open, args=(lease, how), daemon=True,
                                 name=f"setup {lease.sid[:8]}").start()

    def cancelled(self, lease: Lease) -> bool:
        """A build for this lease's session is no longer needed: the worker stops, the lease
        was lost, or the session was closed."""
        return (self._closing.is_set() or not self.registry.holds(lease)
                or self.opener.is_closed(lease.sid))

    def open(self, lease: Lease, how: str) -> None:
        t0 = time.monotonic()
        try:
            session, replayed = self.opener.open(lease, lambda: self.cancelled(lease))
        except LeaseLost as e:
            self.registry.lose(lease, e)
            return
        except (BuildFailed, ProtocolMismatch) as e:  # fails on every worker: no retries
            self.failures.record(lease, e, "setup", final=True)
            return
        except (ClosedUnbuilt, BuildCancelled) as e:
            self.end_unbuilt(lease, e)
            return
        except (RedisError, SessionFailed) as e:  # not this session's failure: no count
            log.warning("session %s: could not start (%s); released", lease.sid,
                        type(e).__name__)
            self.release(lease)
            self.registry.back_off(lease.sid, self.retry_backoff_s)
            return
        except Exception as e:
            self.failures.record(lease, e, "setup")
            return
        if not self.registry.go_live(session):  # lost during setup
            return
        origin = ("the start of the stream" if session.position == START
                  else f"checkpoint {session.position}")
        log.info("session %s: %s (epoch %d, method %s, preview %s, from %s, %d entries "
                 "replayed, %.1f s)", lease.sid, how, lease.epoch, session.main_method,
                 session.preview_method, origin, replayed, time.monotonic() - t0)
        self.registry.notify()

    def end_unbuilt(self, lease: Lease, why: Exception) -> None:
        """A session closed before its model was built: drop its frames (counted) and release;
        a build cancelled for any other reason only releases."""
        try:
            if self.registry.holds(lease) and self.opener.is_closed(lease.sid):
                dropped = self.opener.drop_unbuilt(lease)
                log.info("session %s: closed before its model was built; %d frames dropped "
                         "(counted)", lease.sid, dropped)
            else:
                log.info("session %s: setup stopped (%s)", lease.sid, why)
        except LeaseLost as e:
            self.registry.lose(lease, e)
            return
        except RedisError as e:
            log.warning("session %s: %s while ending it", lease.sid, type(e).__name__)
        self.release(lease)

    def release(self, lease: Lease) -> None:
        """Give the lease up without a session (it never went live)."""
        self.registry.drop(lease, "released")
        try:
            self.leases.release(lease)
        except RedisError as e:
            log.warning("session %s: release failed (%s); the lease will expire", lease.sid,
                        type(e).__name__)
