"""Fan-out of a session's results and parameters streams to its viewers.

One reader task per session (started by its first viewer, stopped after its last) XREADs the
capped results stream and the parameters stream (one entry per breath, `breath` policy), builds
each message once (a volume: a JSON text and a binary message; a breath's parameters: one JSON
text `{"type": "parameters", ...}`) and offers it to every viewer's `LatestQueue`, which never
blocks: when a viewer falls behind its oldest message is dropped. A
new viewer gets the latest volume at once. The reader also watches the session's status: once
a worker marked it failed, every viewer gets a final status message (within one XREAD block,
`BLOCK_MS`) and the reader ends. It watches the worker's live data-quality summary too (the
progress hash's `quality` field): each one that changes the bad electrodes or the usable
fraction goes to every viewer as
`{"type": "status", "status": "open", "quality": {"bad_electrodes": [...],
"usable_fraction": x, ...}}`, and a new viewer gets the latest at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from service import metrics, wire
from service.contract.codecs import (
    ParametersEntry,
    Result,
    SessionQuality,
    decode_parameters,
    decode_result,
    text,
)
from service.contract.fields import ProgressField, SessionField, SessionStatus
from service.contract.keys import parameters_key, progress_key, results_key, session_key

log = logging.getLogger("eitmon.service")

BLOCK_MS = 5000
STATUS_CHECK_S = 1.0  # how often a feed checks whether its session failed (at most)


@dataclass(frozen=True)
class VolumeMessage:
    """The JSON metadata text and the binary volume, always sent as a pair."""

    meta: str
    binary: bytes


@dataclass(frozen=True)
class ParametersMessage:
    """One breath's parameters: a JSON text message, no binary."""

    meta: str


@dataclass(frozen=True)
class QualityMessage:
    """The session's live data-quality summary: a JSON text message, no binary; `key` is
    what the viewers show (bad electrodes, usable fraction): a new message goes out only when
    it changes."""

    meta: str
    key: tuple[tuple[int, ...], float]


Message = VolumeMessage | ParametersMessage | QualityMessage


@dataclass(frozen=True)
class StatusMessage:
    """The JSON text telling viewers that the session ended; the server closes after it."""

    meta: str


async def failure_message(redis: Redis, sid: str) -> StatusMessage | None:
    """`{"type": "status", "status": "failed", "reason": ...}` once a worker marked the
    session failed; None otherwise."""
    status, reason = await redis.hmget(session_key(sid), [SessionField.STATUS.value,
                                                          SessionField.FAILURE_REASON.value])
    if status != SessionStatus.FAILED.value.encode():
        return None
    meta = {"type": "status", "session": sid, "status": SessionStatus.FAILED.value,
            "reason": reason.decode(errors="replace") if reason is not None else None}
    return StatusMessage(json.dumps(meta, separators=(",", ":")))


async def quality_message(redis: Redis, sid: str) -> QualityMessage | None:
    """`{"type": "status", "status": "open", "quality": {...}}` from the worker's latest
    data-quality summary; None when there is none (or it is malformed)."""
    raw = await redis.hget(progress_key(sid), ProgressField.QUALITY.value)
    if raw is None:
        return None
    try:
        quality = SessionQuality.from_json(raw)
    except ValueError as e:
        log.warning("session %s: skipping a malformed quality summary (%s)", sid, e)
        return None
    meta = {"type": "status", "session": sid, "status": SessionStatus.OPEN.value,
            "quality": quality.__dict__}
    return QualityMessage(json.dumps(meta, separators=(",", ":")),
                          (tuple(quality.bad_electrodes), quality.usable_fraction))


def build_message(sid: str, r: Result) -> VolumeMessage:
    meta = {"type": "volume", "session": sid, "seq": r.seq, "timestamp": r.timestamp,
            "kind": r.kind, "method": r.method, "iterations": r.iterations, "loss": r.loss,
            "latency_ms": r.latency_ms, "lag_frames": r.lag_frames, "shape": list(r.shape),
            "dtype": r.dtype, "axes": "PRC", "bytes": len(r.data)}
    if r.breath_start_seq is not None:
        meta["breath_start_seq"] = r.breath_start_seq
        meta["breath_start_ts"] = r.breath_start_ts
    return VolumeMessage(json.dumps(meta, separators=(",", ":")),
                         wire.pack_volume(r.dtype, r.shape, r.seq, r.data))


def parameters_message(sid: str, entry_id: str, p: ParametersEntry) -> ParametersMessage:
    meta = {"type": "parameters", "session": sid, "id": entry_id, "seq": p.seq,
            "breath": p.breath}
    return ParametersMessage(json.dumps(meta, separators=(",", ":")))


class LatestQueue:
    """A bounded queue that drops its oldest item instead of blocking the producer; after
    `finish` it hands out the volumes still queued, then the final status message. A quality
    message waits in a slot of its own (the newest replaces an unsent one), so a slow viewer
    never loses the bad-electrode flag to its volumes."""

    def __init__(self, maxsize: int) -> None:
        self._items: deque[Message] = deque(maxlen=maxsize)
        self._quality: QualityMessage | None = None
        self._ready = asyncio.Event()
        self._final: StatusMessage | None = None
        self.dropped = 0

    def put(self, item: Message) -> None:
        if isinstance(item, QualityMessage):
            self._quality = item
        else:
            if len(self._items) == self._items.maxlen:
                self.dropped += 1
            self._items.append(item)
        self._ready.set()

    def finish(self, final: StatusMessage) -> None:
        self._final = final
        self._ready.set()

    async def get(self) -> Message | StatusMessage:
        while not self._items and self._quality is None and self._final is None:
            self._ready.clear()
            await self._ready.wait()
        if self._quality is not None:
            item, self._quality = self._quality, None
            return item
        return self._items.popleft() if self._items else self._final


class SessionFeed:
    """The reader task of one session and the queues of its viewers."""

    def __init__(self, redis: Redis, sid: str) -> None:
        self.redis, self.sid = redis, sid
        self.viewers: set[LatestQueue] = set()
        self.latest: VolumeMessage | None = None
        self.quality: QualityMessage | None = None
        self.final: StatusMessage | None = None
        self.task = asyncio.create_task(self._run(), name=f"results-{sid}")

    def _deliver(self, msg: Message) -> None:
        if isinstance(msg, VolumeMessage):
            self.latest = msg
        elif isinstance(msg, QualityMessage):
            self.quality = msg
        for q in self.viewers:
            q.put(msg)

    def _finish(self, final: StatusMessage) -> None:
        self.final = final
        for q in self.viewers:
            q.finish(final)

    def _handle_parameters(self, entry_id: str, fields: dict) -> None:
        try:
            entry = decode_parameters(fields)
        except ValueError as e:
            log.warning("session %s: skipping malformed parameters (%s)", self.sid, e)
            return
        self._deliver(parameters_message(self.sid, entry_id, entry))

    def _handle(self, fields: dict) -> None:
        try:
            result = decode_result(fields)
        except ValueError as e:
            log.warning("session %s: skipping a malformed result (%s)", self.sid, e)
            return
        metrics.RECON_LATENCY.labels(result.kind).observe(result.latency_ms / 1000.0)
        self._deliver(build_message(self.sid, result))

    async def _run(self) -> None:
        key, pkey = results_key(self.sid), parameters_key(self.sid)
        last_id: bytes | str | None = None
        last_pid: bytes | str = "0-0"
        delay = 0.2
        loop = asyncio.get_running_loop()
        next_check = loop.time()
        while True:
            try:
                if last_id is None:
                    newest = await self.redis.xrevrange(key, count=1)
                    last_id = newest[0][0] if newest else "0-0"
                    if newest:
                        self._handle(newest[0][1])
                    newest = await self.redis.xrevrange(pkey, count=1)  # only new breaths
                    last_pid = newest[0][0] if newest else "0-0"
                if loop.time() >= next_check:
                    next_check = loop.time() + STATUS_CHECK_S
                    final = await failure_message(self.redis, self.sid)
                    if final is not None:
                        self._finish(final)
                        return
                    quality = await quality_message(self.redis, self.sid)
                    if quality is not None and (self.quality is None
                                                or quality.key != self.quality.key):
                        self._deliver(quality)
                reply = await self.redis.xread({key: last_id, pkey: last_pid}, count=32,
                                               block=BLOCK_MS)
                for stream, entries in reply or []:
                    for entry_id, fields in entries:
                        if text(stream) == pkey:
                            last_pid = entry_id
                            self._handle_parameters(text(entry_id), fields)
                        else:
                            last_id = entry_id
                            self._handle(fields)
                delay = 0.2
            except asyncio.CancelledError:
                raise
            except RedisError as e:
                log.warning("session %s: results reader: %s; retrying", self.sid,
                            type(e).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)


class ResultHub:
    """Per-process registry of session feeds."""

    def __init__(self, redis: Redis, queue_size: int) -> None:
        self.redis, self.queue_size = redis, queue_size
        self.feeds: dict[str, SessionFeed] = {}

    def subscribe(self, sid: str) -> LatestQueue:
        q = LatestQueue(self.queue_size)
        feed = self.feeds.get(sid)
        if feed is None:
            feed = self.feeds[sid] = SessionFeed(self.redis, sid)
        else:
            for latest in (feed.quality, feed.latest):
                if latest is not None:
                    q.put(latest)
        if feed.final is not None:
            q.finish(feed.final)
        feed.viewers.add(q)
        metrics.VIEWERS.inc()
        return q

    async def unsubscribe(self, sid: str, q: LatestQueue) -> None:
        feed = self.feeds.get(sid)
        if feed is None or q not in feed.viewers:
            return
        feed.viewers.discard(q)
        metrics.VIEWERS.dec()
        if not feed.viewers:
            del self.feeds[sid]
            await _cancel(feed.task)

    async def close(self) -> None:
        feeds, self.feeds = list(self.feeds.values()), {}
        for feed in feeds:
            metrics.VIEWERS.dec(len(feed.viewers))
            await _cancel(feed.task)


async def _cancel(task: asyncio.Task) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
