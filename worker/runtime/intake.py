"""The intake thread: read owned sessions' frame streams, publish previews, queue frames.

One `XREADGROUP GROUP eitmon-workers <worker> ... STREAMS <every owned frame stream> > ...`
call serves every session. Each frame gets its preview (the fast linear method) published at
once, before it is queued for the main method; when a read returns several frames of a
`realtime` session (it is behind), only the newest of them gets a preview. The previews of
all sessions on one model are computed in one batched product (`methods.SharedPreview`) and
published in one pipeline. In-band `reference` entries are applied and acknowledged here;
the `close` entry is queued behind the frames.

Every `EITMON_SCAN_INTERVAL_S`, and right after a failed read, the intake also takes the
entries pending in the group for a live session that the session has not taken (`recover`):
entries a read delivered to this worker whose reply never arrived (valkey killed before it
replied), and stragglers (pending with a fenced-out worker that read them after its lease was
taken). Each session remembers the ids it took and that may still be pending (`Session.taken`),
so no entry is taken twice. Every take happens in this thread (the setup's replay takes before
the session is live), so the pending list it reads can never miss an entry being taken.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from redis import Redis
from redis.exceptions import RedisError, ResponseError

from service.contract.codecs import decode_frame_entry, stream_id_key, text
from service.contract.keys import WORKER_GROUP, frames_key
from worker.recon.base import FrameResult
from worker.runtime.failures import SessionFailures
from worker.runtime.fenced import Fenced, LeaseLost, check
from worker.runtime.reference import ProtocolMismatch
from worker.runtime.registry import SessionRegistry
from worker.runtime.session import Frame, Queued, Session

log = logging.getLogger("eitmon.worker")

BLOCK_MS = 200
PAGE = 512


@dataclass
class Taken:
    """Entries one session took in: frames (and a close) ready for the main method in stream
    order, the frames to preview, and the reference entries to acknowledge."""

    session: Session
    ready: list[Queued] = field(default_factory=list)
    shown: list[Frame] = field(default_factory=list)
    refs: list[str] = field(default_factory=list)


def take(session: Session, entries: Sequence[tuple[Any, Any]],
         silent: Collection[str] = ()) -> Taken:
    """Accept entries in stream order. `silent` ids were counted before a takeover: they
    rebuild the state only (no preview, no acknowledgement, no count)."""
    taken = Taken(session)
    for raw_id, fields in entries:
        entry_id = text(raw_id)
        session.taken.add(entry_id)
        entry = decode_frame_entry(fields)
        if entry.kind == "reference" and entry_id not in silent:
            taken.refs.append(entry_id)
        taken.ready += session.accept(entry_id, entry, entry_id in silent)
    fresh = [item for item in taken.ready if isinstance(item, Frame) and not item.silent]
    taken.shown = fresh[-1:] if session.realtime else fresh
    return taken


class Previews:
    """Publishes what sessions took in: previews, acknowledgements; then queues their frames."""

    def __init__(self, redis: Redis, fenced: Fenced, registry: SessionRegistry) -> None:
        self.redis, self.fenced, self.registry = redis, fenced, registry

    def compute(self, batch: list[Taken]) -> dict[tuple[str, str], FrameResult]:
        """The finite previews of the shown frames, one batched product per shared preview. A
        preview that raises or is not finite is skipped: the frames still go to the main
        method."""
        previews: dict[tuple[str, str], FrameResult] = {}
        by_preview: dict[int, list[tuple[Session, Frame]]] = {}
        for taken in batch:
            for frame in taken.shown:
                by_preview.setdefault(id(taken.session.preview), []).append(
                    (taken.session, frame))
        for items in by_preview.values():
            try:
                results = items[0][0].preview.push_many(np.stack([frame.dv for _, frame in items]))
            except Exception as e:
                log.warning("previews not computed: %s: %s", type(e).__name__, e)
                continue
            previews.update({(session.sid, frame.entry_id): result
                             for (session, frame), result in zip(items, results, strict=True)
                             if np.isfinite(result.volume).all()})  # never publish NaN
        return previews

    def publish(self, batch: list[Taken]) -> None:
        """Preview, publish and acknowledge what the sessions took in, then queue their
        frames."""
        previews = self.compute(batch)
        try:
            with self.redis.pipeline(transaction=False) as pipe:
                spans = []
                for taken in batch:
                    session, start = taken.session, len(pipe)
                    for frame in taken.shown:
                        preview = previews.get((session.sid, frame.entry_id))
                        if preview is not None:
                            self.fenced.commit(session.sid, session.lease.value,
                                               frame_id=frame.entry_id, client=pipe,
                                               result=session.result(frame, preview, "preview"))
                    if taken.refs:
                        self.fenced.commit(session.sid, session.lease.value, ack=taken.refs,
                                           client=pipe)
                    spans.append((start, len(pipe)))
                replies = pipe.execute(raise_on_error=False)
        except RedisError as e:  # the frames still go to the main method
            log.warning("previews not published: %s", type(e).__name__)
            replies, spans = [], [(0, 0)] * len(batch)
        for taken, (start, end) in zip(batch, spans, strict=True):
            try:
                for reply in replies[start:end]:
                    check(taken.session.sid, reply)
            except LeaseLost as e:
                self.registry.lose(taken.session.lease, e)
                continue
            except RedisError as e:
                log.warning("session %s: previews not published: %s", taken.session.sid,
                            type(e).__name__)
            taken.session.queue(taken.ready)
        self.registry.notify()


class Intake:
    """Reads new entries for every live session, and recovers the pending ones no session took,
    until the worker stops."""

    def __init__(self, redis: Redis, consumer: str, read_count: int, recover_interval_s: float,
                 registry: SessionRegistry, previews: Previews, failures: SessionFailures,
                 stopping: threading.Event) -> None:
        self.redis, self.consumer, self.read_count = redis, consumer, read_count
        self.recover_interval_s = recover_interval_s
        self.registry, self.previews, self.failures = registry, previews, failures
        self.stopping = stopping

    def run(self) -> None:
        delay = 0.2
        next_recover = 0.0
        while not self.stopping.is_set():
            sessions = {frames_key(session.sid): session
                        for session in self.registry.sessions() if session.ending is None}
            if not sessions:
                self.stopping.wait(0.05)
                continue
            try:
                if time.monotonic() >= next_recover:
                    self.recover(sessions.values())
                    next_recover = time.monotonic() + self.recover_interval_s
                reply = self.redis.xreadgroup(
                    WORKER_GROUP, self.consumer, dict.fromkeys(sessions, ">"),
                    count=self.read_count, block=BLOCK_MS)
                delay = 0.2
            except RedisError as e:
                log.warning("intake: %s; retrying", type(e).__name__)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                next_recover = 0.0  # the failed read may have delivered entries
                continue
            # entries of a session this worker stopped owning meanwhile stay pending for its
            # next owner
            read = [(sessions[text(key)], entries) for key, entries in reply or []]
            batch = self.take([(session, entries) for session, entries in read
                               if self.registry.owns(session) and session.ending is None])
            if batch:
                self.previews.publish(batch)

    def recover(self, sessions: Iterable[Session]) -> None:
        """Claim and take the entries pending in the group for `sessions` that they have not
        taken (whichever consumer holds them). Each session's are published before the next
        session's are claimed: a Redis error leaves nothing taken and unpublished."""
        for session in sessions:
            key = frames_key(session.sid)
            try:
                pending = pending_entries(self.redis, key)
            except ResponseError:  # no stream or group (yet): nothing pending
                continue
            # an entry is pending from its delivery to its acknowledgement and never again
            session.taken.intersection_update(pending)
            ids = sorted(pending.keys() - session.taken, key=stream_id_key)
            if not ids:
                continue
            entries = sorted(((i, f) for i, f in self.redis.xclaim(
                key, WORKER_GROUP, self.consumer, 0, ids) if f),
                key=lambda entry: stream_id_key(text(entry[0])))
            log.warning("session %s: %d pending entries recovered from %s", session.sid,
                        len(entries), ", ".join(sorted({pending[i] for i in ids})))
            if self.registry.owns(session) and session.ending is None:
                if batch := self.take([(session, entries)]):
                    self.previews.publish(batch)

    def take(self, reads: list[tuple[Session, Any]]) -> list[Taken]:
        """`take` per session; a session whose entries raise fails (its attempt ends; a
        reference refused against the model fails it for good)."""
        batch = []
        for session, entries in reads:
            try:
                batch.append(take(session, entries))
            except Exception as e:
                self.failures.record(session.lease, e, "intake",
                                     final=isinstance(e, ProtocolMismatch))
        return batch


def pending_entries(redis: Redis, key: str) -> dict[str, str]:
    """Every entry pending in the group for the stream: id -> consumer."""
    pending: dict[str, str] = {}
    start = "-"
    while page := redis.xpending_range(key, WORKER_GROUP, start, "+", PAGE):
        pending.update({text(row["message_id"]): text(row["consumer"]) for row in page})
        if len(page) < PAGE:
            break
        start = "(" + text(page[-1]["message_id"])
    return pending
