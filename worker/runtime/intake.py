"""The intake thread: read owned sessions' frame streams, publish previews, queue frames.

One `XREADGROUP GROUP eitmon-workers <worker> ... STREAMS <every owned frame stream> > ...`
call serves every session. Each frame gets its preview (the fast linear method) published at
once, before it is queued for the main method; when a read returns several frames of a
`realtime` session (it is behind), only the newest of them gets a preview. The previews of
all sessions on one model are computed in one batched product (`methods.SharedPreview`) and
published in one pipeline. In-band `reference` entries are applied and acknowledged here;
the `close` entry is queued behind the frames.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from redis.exceptions import RedisError

from service.contract.codecs import decode_frame_entry
from service.contract.keys import WORKER_GROUP, frames_key
from worker.recon.base import FrameResult
from worker.runtime.fenced import LeaseLost, check
from worker.runtime.session import Frame, Session

if TYPE_CHECKING:
    from worker.runtime.loop import Worker

log = logging.getLogger("eitmon.worker")

BLOCK_MS = 200


def text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


@dataclass
class Taken:
    """Entries one session took in: frames ready for the main method, those to preview, and
    the reference entries to acknowledge."""

    session: Session
    ready: list[Frame] = field(default_factory=list)
    shown: list[Frame] = field(default_factory=list)
    refs: list[str] = field(default_factory=list)


def take(s: Session, entries: Sequence[tuple[Any, Any]], silent: Collection[str] = ()) -> Taken:
    """Accept entries in stream order. `silent` ids were counted before a takeover: they
    rebuild the state only (no preview, no acknowledgement, no count)."""
    t = Taken(s)
    for raw_id, fields in entries:
        entry_id = text(raw_id)
        entry = decode_frame_entry(fields)
        if entry.kind == "reference" and entry_id not in silent:
            t.refs.append(entry_id)
        t.ready += s.accept(entry_id, entry, entry_id in silent)
    fresh = [f for f in t.ready if not f.silent]
    t.shown = fresh[-1:] if s.realtime else fresh
    return t


def publish(w: Worker, batch: list[Taken]) -> None:
    """Preview, publish and acknowledge what the sessions took in, then queue their frames."""
    previews: dict[tuple[str, str], FrameResult] = {}
    by_preview: dict[int, list[tuple[Session, Frame]]] = {}
    for t in batch:
        for f in t.shown:
            by_preview.setdefault(id(t.session.preview), []).append((t.session, f))
    for items in by_preview.values():
        results = items[0][0].preview.push_many(np.stack([f.dv for _, f in items]))
        previews.update({(s.sid, f.entry_id): r for (s, f), r in zip(items, results,
                                                                      strict=True)})
    try:
        with w.redis.pipeline(transaction=False) as p:
            spans = []
            for t in batch:
                s, start = t.session, len(p)
                for f in t.shown:
                    w.fenced.commit(s.sid, s.lease.value, frame_id=f.entry_id, client=p,
                                    result=s.result(f, previews[(s.sid, f.entry_id)], "preview"))
                if t.refs:
                    w.fenced.commit(s.sid, s.lease.value, ack=t.refs, client=p)
                spans.append((start, len(p)))
            replies = p.execute(raise_on_error=False)
    except RedisError as e:  # the frames still go to the main method
        log.warning("previews not published: %s", type(e).__name__)
        replies, spans = [], [(0, 0)] * len(batch)
    for t, (start, end) in zip(batch, spans, strict=True):
        try:
            for reply in replies[start:end]:
                check(t.session.sid, reply)
        except LeaseLost as e:
            w.lose(t.session, e)
            continue
        except RedisError as e:
            log.warning("session %s: previews not published: %s", t.session.sid,
                        type(e).__name__)
        t.session.queue(t.ready)
    w.notify()


class Intake:
    """Reads new entries for every live session until the worker stops."""

    def __init__(self, w: Worker) -> None:
        self.w = w

    def run(self) -> None:
        delay = 0.2
        while not self.w.stopping.is_set():
            late = []
            while not self.w.late.empty():
                s, entries = self.w.late.get()
                late.append(take(s, entries))
            if late:
                publish(self.w, late)
            sessions = {frames_key(s.sid): s for s in self.w.sessions()
                        if s.ending is None}
            if not sessions:
                self.w.stopping.wait(0.05)
                continue
            try:
                reply = self.w.redis.xreadgroup(
                    WORKER_GROUP, self.w.name, dict.fromkeys(sessions, ">"),
                    count=self.w.cfg.read_count, block=BLOCK_MS)
                delay = 0.2
            except RedisError as e:
                log.warning("intake: %s; retrying", type(e).__name__)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            # entries of a session this worker stopped owning meanwhile stay pending for its
            # next owner
            batch = [take(sessions[text(key)], entries) for key, entries in reply or []
                     if self.w.owns(sessions[text(key)])
                     and sessions[text(key)].ending is None]
            if batch:
                publish(self.w, batch)
