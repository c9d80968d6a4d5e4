"""`POST /v1/sessions/{id}/frames`: validate a batch of voltage frames, queue it atomically.

Bodies:
- `application/json`: `{"frames": [{"seq": int, "timestamp": float, "voltages": [M numbers]}]}`.
- `application/octet-stream`: T x M little-endian float32, C order, with headers
  `X-Frame-Count: T`, `X-Seq-Start: s0` (frame i gets seq s0 + i), `X-Timestamp-Start: t0` and,
  for T > 1, `X-Frame-Interval: dt` (frame i gets timestamp t0 + i dt, seconds).

A batch is accepted or rejected whole. Within a batch seqs must increase; repeating a seq of the
same batch marks the repeat a duplicate. A frame whose seq is <= the session's last accepted
seq is a duplicate too: acknowledged, reported, counted, never queued twice (the check and the
XADDs run in one Lua script, so concurrent posts cannot double-queue). A seq more than
`Settings.seq_window` ahead of the last accepted one refuses the batch (422 seq_too_far_ahead),
so that no sender can push the session's high-water mark out of the belt's reach.

Only a token bound to the session (or an admin token) may write to it (`service.auth`).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPAuthorizationCredentials
from redis.asyncio import Redis
from redis.exceptions import RedisError

from service import metrics
from service.auth import Principal, authenticate, bearer_scheme
from service.contract.codecs import FRAME_DTYPE, encode_frame, flat
from service.contract.fields import SessionField, SessionStatus
from service.contract.keys import counters_key, frames_key, session_key
from service.contract.scripts import (
    BACKLOG_FULL,
    FAILED,
    MISSING,
    NOT_OPEN,
    SEQ_TOO_FAR,
    registered,
)
from service.contract.tokens import FRAMES_WRITE
from service.deps import closed, failed, get_redis, get_settings, not_found, valid_sid
from service.errors import (
    AUTH_RESPONSES,
    REDIS_RESPONSES,
    SESSION_RESPONSES,
    ApiError,
    ErrorResponse,
    error_body,
    error_example,
)
from service.models import EXAMPLE_VOLTAGES, FramesAck

router = APIRouter(tags=["frames"])
log = logging.getLogger("eitmon.service")

MAX_SEQ = 2**53 - 1  # exact in the Lua (double) comparison

@dataclass(frozen=True)
class Batch:
    seqs: list[int]
    timestamps: list[float]
    voltages: np.ndarray  # T x M float32


def reject(status: int, reason: str, detail: str) -> ApiError:
    return ApiError(status, reason, detail)


def to_voltages(values: Any, m: int, where: str) -> np.ndarray:
    """M finite float32 voltages from a JSON list; ApiError(422) otherwise."""
    if not isinstance(values, list):
        raise reject(422, "non_numeric", f"{where}: expected a list of {m} numbers")
    if len(values) != m:
        raise reject(422, "wrong_length", f"{where}: expected {m} values, got {len(values)}")
    if not set(map(type, values)) <= {float, int}:
        raise reject(422, "non_numeric", f"{where}: every value must be a number")
    try:
        arr = np.asarray(values, dtype=np.float64)
    except OverflowError:
        raise reject(422, "non_finite", f"{where}: a value is outside the float32 range") from None
    with np.errstate(over="ignore"):
        out = arr.astype(FRAME_DTYPE)
    _check_finite(out, where)
    return out


def _check_finite(arr: np.ndarray, where: str) -> None:
    with np.errstate(over="ignore", invalid="ignore"):
        ok = np.isfinite(arr)
    if not ok.all():
        idx = np.argwhere(~ok)[0]
        at = "".join(f"[{int(i)}]" for i in idx)
        raise reject(422, "non_finite",
                     f"{where}{at}: NaN, Inf or outside the float32 range")


def _check_seqs(seqs: list[int]) -> None:
    """Seqs increase within a batch; an exact repeat of an earlier seq is a duplicate."""
    seen: set[int] = set()
    top = -1
    for i, s in enumerate(seqs):
        if s <= top and s not in seen:
            raise reject(422, "seq_not_increasing",
                         f"frames[{i}].seq: {s} comes after {top} in the same batch")
        seen.add(s)
        top = max(top, s)


def parse_json(body: bytes, m: int, max_frames: int) -> Batch:
    """A JSON batch; the NaN/Infinity tokens Python's json accepts are caught as non_finite."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: deep nesting
        raise reject(400, "invalid_json", "the body is not valid JSON") from None
    if not isinstance(doc, dict) or set(doc) != {"frames"} or not isinstance(doc["frames"], list):
        raise reject(422, "malformed_body", 'expected {"frames": [{seq, timestamp, voltages}]}')
    frames = doc["frames"]
    _check_count(len(frames), max_frames)
    seqs, stamps = [], []
    volts = np.empty((len(frames), m), dtype=FRAME_DTYPE)
    for i, f in enumerate(frames):
        if not isinstance(f, dict) or set(f) != {"seq", "timestamp", "voltages"}:
            raise reject(422, "malformed_body",
                         f"frames[{i}]: expected exactly the keys seq, timestamp, voltages")
        seq, ts = f["seq"], f["timestamp"]
        if type(seq) is not int or not 0 <= seq <= MAX_SEQ:
            raise reject(422, "invalid_seq", f"frames[{i}].seq: an integer 0..{MAX_SEQ}")
        if type(ts) not in (int, float):
            raise reject(422, "non_numeric", f"frames[{i}].timestamp: must be a number")
        if not math.isfinite(ts):
            raise reject(422, "non_finite", f"frames[{i}].timestamp: NaN or Inf")
        volts[i] = to_voltages(f["voltages"], m, f"frames[{i}].voltages")
        seqs.append(seq)
        stamps.append(float(ts))
    _check_seqs(seqs)
    return Batch(seqs, stamps, volts)


def _header(request: Request, name: str, kind: type, required: bool = True) -> Any:
    raw = request.headers.get(name)
    if raw is None:
        if required:
            raise reject(400, "invalid_header", f"{name}: header required for binary bodies")
        return None
    try:
        value = kind(raw)
    except ValueError:
        raise reject(400, "invalid_header", f"{name}: expected {kind.__name__}") from None
    if kind is float and not math.isfinite(value):
        raise reject(400, "invalid_header", f"{name}: must be finite")
    return value


def parse_binary(body: bytes, request: Request, m: int, max_frames: int) -> Batch:
    """T x M little-endian float32 frames; seq and timestamps from the X- headers."""
    count = _header(request, "X-Frame-Count", int)
    seq0 = _header(request, "X-Seq-Start", int)
    ts0 = _header(request, "X-Timestamp-Start", float)
    dt = _header(request, "X-Frame-Interval", float, required=count > 1) or 0.0
    _check_count(count, max_frames)
    frame_bytes = m * FRAME_DTYPE.itemsize
    if len(body) != count * frame_bytes:
        raise reject(422, "wrong_length",
                     f"body: {len(body)} bytes for {count} frames of {m} float32 values "
                     f"(expected {count * frame_bytes})")
    if not 0 <= seq0 <= MAX_SEQ - count:
        raise reject(422, "invalid_seq", f"X-Seq-Start: an integer 0..{MAX_SEQ - count}")
    if dt < 0:
        raise reject(400, "invalid_header", "X-Frame-Interval: must be >= 0")
    stamps = [ts0 + i * dt for i in range(count)]
    if not math.isfinite(stamps[-1]):  # the largest: ts0 and dt are finite, dt >= 0
        raise reject(422, "non_finite", f"frames[{count - 1}].timestamp: X-Timestamp-Start + "
                                        f"{count - 1} * X-Frame-Interval overflows")
    volts = np.frombuffer(body, dtype=FRAME_DTYPE).reshape(count, m)
    _check_finite(volts, "frames")
    return Batch(list(range(seq0, seq0 + count)), stamps, volts)


def _check_count(count: int, max_frames: int) -> None:
    if count < 1:
        raise reject(422, "empty_batch", "a batch needs at least one frame")
    if count > max_frames:
        raise reject(413, "batch_too_large", f"at most {max_frames} frames per request")


async def ingest(redis: Redis, sid: str, batch: Batch, seq_window: int,
                 max_backlog: int) -> FramesAck:
    """Run the atomic check-and-append; ApiError(404/409) if the session vanished, closed or
    failed, ApiError(422) if a seq jumps more than `seq_window` ahead, ApiError(429) if its
    backlog would pass `max_backlog` frames."""
    entries = [flat(encode_frame(seq, ts, v)) for seq, ts, v in
               zip(batch.seqs, batch.timestamps, batch.voltages, strict=True)]
    args: list[Any] = [len(entries), len(entries[0]), seq_window, max_backlog]
    for seq, entry in zip(batch.seqs, entries, strict=True):
        args += [str(seq), *entry]
    keys = [session_key(sid), counters_key(sid), frames_key(sid)]
    out = await registered(redis).ingest(keys=keys, args=args)
    if out[0] == MISSING:
        raise not_found(sid)
    if out[0] == FAILED:
        raise failed(sid)
    if out[0] == NOT_OPEN:
        raise closed(sid)
    if out[0] == SEQ_TOO_FAR:
        raise reject(422, "seq_too_far_ahead",
                     f"a seq is more than {seq_window} ahead of the last accepted seq")
    if out[0] == BACKLOG_FULL:
        raise ApiError(429, "backlog_full",
                       f"session {sid} holds {out[1]} frames no worker has processed yet "
                       f"(at most {max_backlog}); retry later", headers={"Retry-After": "5"})
    accepted, last, lag, dups = out
    return FramesAck(accepted=int(accepted), duplicates=[int(d) for d in dups],
                     last_seq=int(last), lag_frames=max(int(lag), 0))


async def open_session_m(redis: Redis, sid: str) -> int:
    """M of an open session; ApiError(404) if unknown, ApiError(409) if closed or failed."""
    if not valid_sid(sid):
        raise not_found(sid)
    status, m = await redis.hmget(session_key(sid), [
        SessionField.STATUS.value, SessionField.N_MEASUREMENTS.value])
    if status is None:
        raise not_found(sid)
    if status == SessionStatus.FAILED.value.encode():
        raise failed(sid)
    if status != SessionStatus.OPEN.value.encode():
        raise closed(sid)
    return int(m)


async def count_rejection(redis: Redis, sid: str, reason: str) -> None:
    keys = [session_key(sid), counters_key(sid)]
    try:
        await registered(redis).count_rejection(keys=keys, args=[reason])
    except RedisError as e:  # the rejection itself is the answer; don't mask it
        log.warning("could not count a rejection for session %s: %s", sid, type(e).__name__)


async def frames_principal(sid: str, request: Request,
                           credentials: HTTPAuthorizationCredentials | None
                           = Depends(bearer_scheme)) -> Principal:
    """frames:write on this session, counting auth failures in the rejection metric."""
    try:
        return await authenticate(request, credentials, (FRAMES_WRITE,), sid)
    except ApiError as e:
        metrics.FRAMES_REJECTED.labels(e.reason).inc()
        raise


_FRAMES_SCHEMA = {"type": "object", "required": ["frames"], "properties": {"frames": {
    "type": "array", "items": {"type": "object", "required": ["seq", "timestamp", "voltages"],
                               "properties": {"seq": {"type": "integer", "minimum": 0},
                                              "timestamp": {"type": "number"},
                                              "voltages": {"type": "array",
                                                           "items": {"type": "number"}}}}}}}
_BINARY_HEADERS = [
    {"name": "X-Frame-Count", "in": "header", "schema": {"type": "integer"}, "example": 2,
     "description": "binary bodies: T, the number of frames (required)"},
    {"name": "X-Seq-Start", "in": "header", "schema": {"type": "integer"}, "example": 100,
     "description": "binary bodies: seq of the first frame (required)"},
    {"name": "X-Timestamp-Start", "in": "header", "schema": {"type": "number"},
     "example": 12.0, "description": "binary bodies: timestamp of the first frame, s"},
    {"name": "X-Frame-Interval", "in": "header", "schema": {"type": "number"},
     "example": 0.025, "description": "binary bodies: seconds between frames (T > 1)"},
]
OPENAPI_FRAMES = {
    "parameters": _BINARY_HEADERS,
    "requestBody": {"required": True, "content": {
        "application/json": {"schema": _FRAMES_SCHEMA, "examples": {"two frames": {"value": {
            "frames": [{"seq": 0, "timestamp": 12.0, "voltages": EXAMPLE_VOLTAGES},
                       {"seq": 1, "timestamp": 12.025, "voltages": EXAMPLE_VOLTAGES}]}}}},
        "application/octet-stream": {
            "schema": {"type": "string", "format": "binary"},
            "examples": {"T x M float32": {
                "summary": "T*M*4 bytes, little-endian float32, frame after frame",
                "value": "<binary>"}}}}},
}


@router.post(
    "/v1/sessions/{sid}/frames", status_code=202, response_model=FramesAck,
    summary="Queue voltage frames (JSON or binary float32)",
    openapi_extra=OPENAPI_FRAMES,
    responses={**AUTH_RESPONSES, **SESSION_RESPONSES,
               400: {"model": ErrorResponse, "content": {"application/json": {"examples": {
                   "header": {"value": error_body("invalid_header",
                                                  "X-Seq-Start: header required")},
                   "json": {"value": error_body("invalid_json", "the body is not valid JSON")},
               }}}},
               413: error_example("body_too_large", "request bodies are limited to 4194304 bytes"),
               415: error_example("unsupported_media_type", "use application/json or ..."),
               422: error_example("non_finite", "frames[3].voltages[17]: NaN, Inf or outside ..."),
               429: error_example("backlog_full", "session 3f2c... holds 6000 frames no worker "
                                                  "has processed yet (at most 6000); retry later"),
               503: REDIS_RESPONSES})
async def post_frames(sid: str, request: Request,
                      _: Principal = Depends(frames_principal)) -> FramesAck:
    """Validate and queue a batch; 202 only once every new frame is in the session's stream."""
    redis, settings = get_redis(request), get_settings(request)
    try:
        m = await open_session_m(redis, sid)
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in ("application/json", "application/octet-stream"):
            raise reject(415, "unsupported_media_type",
                         "use application/json or application/octet-stream")
        body = await request.body()
        if ctype == "application/json":
            batch = parse_json(body, m, settings.max_batch_frames)
        else:
            batch = parse_binary(body, request, m, settings.max_batch_frames)
        ack = await ingest(redis, sid, batch, settings.seq_window, settings.max_backlog_frames)
    except ApiError as e:
        metrics.FRAMES_REJECTED.labels(e.reason).inc()
        if e.reason != "session_not_found":
            await count_rejection(redis, sid, e.reason)
        raise
    metrics.FRAMES_ACCEPTED.inc(ack.accepted)
    metrics.FRAMES_DUPLICATE.inc(len(ack.duplicates))
    metrics.QUEUE_LAG.observe(ack.lag_frames)
    return ack
