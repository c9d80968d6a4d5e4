"""Opening a session this worker just got the lease of: settings, model, reconstructors, the
last checkpoint, and the replay of the frame stream after it.

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
from typing import TYPE_CHECKING

import numpy as np
from redis import Redis

from service.contract.codecs import FRAME_DTYPE
from service.contract.fields import SessionField
from service.contract.keys import WORKER_GROUP, frames_key, progress_key, session_key
from service.contract.session import SessionConfig
from worker.runtime import checkpoint, methods
from worker.runtime.checkpoint import START, Checkpoint
from worker.runtime.fenced import CHECKPOINT
from worker.runtime.intake import publish, take, text
from worker.runtime.lease import Lease
from worker.runtime.reference import Reference
from worker.runtime.session import Session

if TYPE_CHECKING:
    from worker.runtime.loop import Worker

log = logging.getLogger("eitmon.worker")

PAGE = 512


def id_key(entry_id: str) -> tuple[int, int]:
    """A stream id as a sortable pair."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def open_session(w: Worker, lease: Lease) -> tuple[Session, int]:
    """The session, restored and replayed; also the number of entries replayed."""
    sid = lease.sid
    raw_cfg, raw_ref = w.redis.hmget(session_key(sid), [
        SessionField.CONFIG.value, SessionField.REFERENCE.value])
    cfg = SessionConfig.from_json(raw_cfg)
    ckpt = load_checkpoint(w, sid)
    main_method = methods.resolve(cfg.method, methods.MAIN_PREFERENCE)
    if main_method != cfg.method:
        log.warning("session %s: method %s is not available; using %s", sid, cfg.method,
                    main_method)
    model, preview = w.models.acquire(cfg)
    try:
        main = methods.build(main_method, model, w.device)
        if ckpt is not None and ckpt.main_method == main_method:
            main.load_state_dict(ckpt.main_state)
        initial = ckpt.reference if ckpt is not None else None
        if initial is None and cfg.reference.get("mode") == "explicit" and raw_ref:
            initial = np.frombuffer(raw_ref, dtype=FRAME_DTYPE).astype(np.float64)
        s = Session(lease=lease, config=cfg, model=model, preview=preview,
                    preview_method=w.models.preview_method, main=main, main_method=main_method,
                    reference=Reference(cfg.reference, initial),
                    position=ckpt.stream_id if ckpt is not None else START)
        return s, replay(w, s)
    except BaseException:
        w.models.release(cfg)
        raise


def load_checkpoint(w: Worker, sid: str) -> Checkpoint | None:
    """The committed checkpoint of the session, or None (none yet, or unreadable)."""
    name = w.redis.hget(progress_key(sid), CHECKPOINT)
    if not name:
        return None
    try:
        ckpt = checkpoint.read(w.cfg.checkpoints, text(name))
    except (OSError, ValueError, KeyError) as e:
        log.warning("session %s: checkpoint %s unreadable (%s); replaying from the start of "
                    "the frame stream", sid, text(name), type(e).__name__)
        return None
    return ckpt if ckpt.sid == sid else None


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


def replay(w: Worker, s: Session) -> int:
    """Feed the entries after the checkpoint (and every pending one); returns their number."""
    key = frames_key(s.sid)
    pending = claim_pending(w.redis, key, w.name)
    end = last_delivered(w.redis, key)
    start = "-" if s.position == START else "(" + s.position
    if pending:
        first = min(pending, key=id_key)
        if s.position == START or id_key(first) <= id_key(s.position):
            start = first
    fed = 0
    while True:
        page = w.redis.xrange(key, min=start, max=end, count=PAGE)
        if not page:
            return fed
        entries = [(i, f) for i, f in page
                   if text(i) in pending or id_key(text(i)) > id_key(s.position)]
        publish(w, [take(s, entries, silent={text(i) for i, _ in entries} - pending)])
        fed += len(entries)
        start = "(" + text(page[-1][0])
