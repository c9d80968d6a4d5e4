"""Session routes: create, list, inspect, close, set the reference."""

from __future__ import annotations

import asyncio
import math
import re
import time
import uuid
from typing import Any, Literal

from fastapi import APIRouter, Body, Depends, Query, Request
from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from service import metrics, streams
from service.auth import FRAMES_WRITE, SESSIONS_ADMIN, VOLUMES_READ, Principal, require
from service.deps import closed, get_redis, get_settings, not_found, valid_sid
from service.errors import AUTH_RESPONSES, SESSION_RESPONSES, ApiError, error_example
from service.frames import open_session_m, to_voltages
from service.models import (
    SESSION_CREATE_EXAMPLES,
    Counters,
    ExplicitReference,
    Lag,
    ReferenceAck,
    ReferenceBody,
    SessionCreate,
    SessionInfo,
    SessionList,
    WorkerInfo,
)
from service.settings import describe_error
from worker.forward.geometry import GEOMETRY_PRESETS, resolve_geometry
from worker.forward.grid import resolve_grid
from worker.forward.protocol import PROTOCOL_PRESETS, resolve_protocol

router = APIRouter(tags=["sessions"])

MAX_GRID_DIM = 256
MAX_VOXELS = 64**3

# KEYS: session hash then every key to expire. ARGV: now, expires_at, retention_s.
# Returns 0 (missing), 1 (already closed), 2 (closed now).
CLOSE_LUA = """
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return 0 end
if st == 'closed' then return 1 end
redis.call('HSET', KEYS[1], 'status', 'closed', 'closed_at', ARGV[1], 'expires_at', ARGV[2])
redis.call('XADD', KEYS[3], '*', 'kind', 'close')
for i = 1, #KEYS do redis.call('EXPIRE', KEYS[i], ARGV[3]) end
return 2
"""

# KEYS: session hash, frame stream. ARGV: M float32 bytes. Returns the new version, -1, -2.
REFERENCE_LUA = """
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return -1 end
if st ~= 'open' then return -2 end
local v = redis.call('HINCRBY', KEYS[1], 'reference_version', 1)
redis.call('HSET', KEYS[1], 'reference', ARGV[1])
redis.call('XADD', KEYS[2], '*', 'kind', 'reference', 'v', ARGV[1])
return v
"""

_ADMIN_RESPONSES = {**AUTH_RESPONSES, **SESSION_RESPONSES}


def _spec_error(reason: str, exc: Exception) -> ApiError:
    if isinstance(exc, ValidationError):
        return ApiError(422, reason, describe_error(exc))
    return ApiError(422, reason, str(exc))


def resolve_config(body: SessionCreate) -> streams.SessionConfig:
    """Validate geometry/protocol/grid; ApiError(422) with the reason. Files are not read."""
    geometry_preset = body.geometry if isinstance(body.geometry, str) else None
    if geometry_preset is not None and geometry_preset not in GEOMETRY_PRESETS:
        raise ApiError(422, "invalid_geometry", f"geometry: unknown preset; presets: "
                                                f"{', '.join(GEOMETRY_PRESETS)}")
    try:
        geometry = resolve_geometry(body.geometry)
    except (ValueError, TypeError) as e:
        raise _spec_error("invalid_geometry", e) from None
    protocol_preset = body.protocol if isinstance(body.protocol, str) else None
    if protocol_preset is not None and not (protocol_preset in PROTOCOL_PRESETS
                                            or re.fullmatch(r"skip\d{1,3}", protocol_preset)):
        raise ApiError(422, "invalid_protocol", f"protocol: unknown preset; presets: "
                                                f"{', '.join(PROTOCOL_PRESETS)} or skipK")
    n_electrodes = geometry.electrodes.count
    try:
        protocol = resolve_protocol(body.protocol)
        m = protocol.build(n_electrodes).n_measurements
    except (ValueError, TypeError) as e:
        raise _spec_error("invalid_protocol", e) from None
    try:
        grid = resolve_grid(body.grid)
    except (ValueError, TypeError) as e:
        raise _spec_error("invalid_grid", e) from None
    if max(grid.shape) > MAX_GRID_DIM or math.prod(grid.shape) > MAX_VOXELS:
        raise ApiError(422, "invalid_grid", f"grid: at most {MAX_GRID_DIM} per axis and "
                                            f"{MAX_VOXELS} voxels")
    reference = ({"mode": "explicit"} if isinstance(body.reference, ExplicitReference)
                 else body.reference.model_dump())
    return streams.SessionConfig(
        geometry=geometry.model_dump(mode="json"), protocol=protocol.model_dump(mode="json"),
        grid=grid.shape, method=body.method, reference=reference, realtime=body.realtime,
        n_electrodes=n_electrodes, n_measurements=m, geometry_preset=geometry_preset,
        protocol_preset=protocol_preset)


async def load_session(redis: Redis, sid: str) -> SessionInfo | None:
    """The API view of a session from its hash, counters, the worker's progress and lease."""
    if not valid_sid(sid):
        return None
    async with redis.pipeline(transaction=False) as p:
        p.hgetall(streams.session_key(sid))
        p.hgetall(streams.counters_key(sid))
        p.hgetall(streams.progress_key(sid))
        p.get(streams.lease_key(sid))
        p.pttl(streams.lease_key(sid))
        p.time()
        sess, counts, progress, lease, pttl, now = await p.execute()
    if not sess:
        return None
    s = {k.decode(): v for k, v in sess.items()}
    c = {k.decode(): int(v) for k, v in counts.items()}
    cfg = streams.SessionConfig.from_json(s[streams.SessionField.CONFIG.value])
    done = c.get("reconstructed", 0) + c.get("coalesced", 0)
    lag_frames = max(c.get("accepted", 0) - done, 0)
    lag_seconds: float | None = 0.0
    if lag_frames:
        last_id = progress.get(streams.ProgressField.LAST_ID.value.encode())
        start = b"(" + last_id if last_id else b"-"
        first = await redis.xrange(streams.frames_key(sid), min=start, max="+", count=1)
        now_ms = now[0] * 1000 + now[1] // 1000
        lag_seconds = (max(now_ms - streams.stream_id_ms(first[0][0]), 0) / 1000
                       if first else None)
    worker = None
    if lease is not None:
        le = streams.decode_lease(lease)
        worker = WorkerInfo(id=le.worker, epoch=le.epoch, lease_ttl_ms=max(int(pttl), 0))
    last_seq = int(s.get("last_seq", b"-1"))
    label = s.get(streams.SessionField.PATIENT_LABEL.value)
    settings = {k: v for k, v in cfg.__dict__.items() if k not in ("n_electrodes",
                                                                   "n_measurements")}
    settings["grid"] = list(cfg.grid)
    return SessionInfo(
        id=sid, status=s["status"].decode(), created_at=float(s["created_at"]),
        closed_at=float(s["closed_at"]) if "closed_at" in s else None,
        expires_at=float(s["expires_at"]) if "expires_at" in s else None,
        patient_label=label.decode() if label else None, n_electrodes=cfg.n_electrodes,
        n_measurements=cfg.n_measurements, grid=list(cfg.grid), mask_shape=list(cfg.grid),
        settings=settings, reference_version=int(s.get("reference_version", b"0")),
        last_seq=last_seq if last_seq >= 0 else None,
        counters=Counters(
            accepted=c.get("accepted", 0), duplicate=c.get("duplicate", 0),
            reconstructed=c.get("reconstructed", 0), coalesced=c.get("coalesced", 0),
            rejected=c.get("rejected", 0),
            rejected_by_reason={k.removeprefix(streams.REJECTED_PREFIX): v for k, v in c.items()
                                if k.startswith(streams.REJECTED_PREFIX)}),
        lag=Lag(frames=lag_frames, seconds=lag_seconds), worker=worker)


async def ensure_control_group(redis: Redis) -> None:
    """Create the workers' consumer group on the control stream (from id 0) unless it exists."""
    try:
        await redis.xgroup_create(streams.CONTROL_STREAM, streams.WORKER_GROUP, id="0",
                                  mkstream=True)
    except ResponseError as e:
        if "BUSYGROUP" not in str(e):
            raise


@router.post("/v1/sessions", status_code=201, response_model=SessionInfo,
             summary="Open a session (every field has a default)",
             responses={**AUTH_RESPONSES,
                        422: error_example("invalid_geometry", "electrodes.width: ...")})
async def create_session(
    request: Request,
    body: SessionCreate = Body(openapi_examples=SESSION_CREATE_EXAMPLES),
    _: Principal = Depends(require(SESSIONS_ADMIN)),
) -> SessionInfo:
    """Validate the settings, write the session, its counters and its frame stream (with the
    worker's consumer group), then add its entry to the control stream."""
    redis = get_redis(request)
    cfg = resolve_config(body)
    reference = None
    if isinstance(body.reference, ExplicitReference):
        reference = to_voltages(body.reference.voltages, cfg.n_measurements,
                                "reference.voltages")
    sid, now = uuid.uuid4().hex, time.time()
    fields: dict[str, Any] = {
        streams.SessionField.STATUS.value: "open",
        streams.SessionField.CREATED_AT.value: repr(now),
        streams.SessionField.CONFIG.value: cfg.to_json(),
        streams.SessionField.N_MEASUREMENTS.value: cfg.n_measurements,
        streams.SessionField.LAST_SEQ.value: -1,
        streams.SessionField.REFERENCE_VERSION.value: 0 if reference is None else 1,
    }
    if body.patient_label:
        fields[streams.SessionField.PATIENT_LABEL.value] = body.patient_label
    if reference is not None:
        fields[streams.SessionField.REFERENCE.value] = streams.voltages_bytes(reference)
    async with redis.pipeline(transaction=True) as p:
        p.hset(streams.session_key(sid), mapping=fields)
        p.hset(streams.counters_key(sid), mapping={c.value: 0 for c in streams.Counter})
        if reference is not None:
            p.xadd(streams.frames_key(sid), streams.encode_reference(reference))
        p.xgroup_create(streams.frames_key(sid), streams.WORKER_GROUP, id="0", mkstream=True)
        await p.execute()
    await redis.zadd(streams.SESSIONS_INDEX, {sid: now})
    await ensure_control_group(redis)
    control_id = await redis.xadd(streams.CONTROL_STREAM, streams.encode_control("open", sid, now))
    await redis.hset(streams.session_key(sid), streams.SessionField.CONTROL_ID.value, control_id)
    metrics.SESSIONS_OPENED.inc()
    info = await load_session(redis, sid)
    assert info is not None
    return info


@router.get("/v1/sessions", response_model=SessionList, summary="List sessions, newest first",
            responses=AUTH_RESPONSES)
async def list_sessions(
    request: Request,
    status: Literal["open", "closed"] | None = Query(None, description="filter by status"),
    limit: int = Query(100, ge=1, le=1000),
    _: Principal = Depends(require(SESSIONS_ADMIN, VOLUMES_READ)),
) -> SessionList:
    """Sessions from the index; ids whose keys expired are pruned from it on the way."""
    redis = get_redis(request)
    out: list[SessionInfo] = []
    start = 0
    while len(out) < limit:
        ids = [i.decode() for i in await redis.zrevrange(streams.SESSIONS_INDEX, start,
                                                        start + limit - 1)]
        if not ids:
            break
        start += len(ids)
        infos = await asyncio.gather(*(load_session(redis, i) for i in ids))
        gone = [i for i, info in zip(ids, infos, strict=True) if info is None]
        if gone:
            await redis.zrem(streams.SESSIONS_INDEX, *gone)
            start -= len(gone)
        out += [i for i in infos if i is not None and (status is None or i.status == status)]
    return SessionList(sessions=out[:limit])


@router.get("/v1/sessions/{sid}", response_model=SessionInfo, summary="Session status",
            responses={**AUTH_RESPONSES, 404: SESSION_RESPONSES[404]})
async def get_session(sid: str, request: Request,
                      _: Principal = Depends(require(SESSIONS_ADMIN, VOLUMES_READ))
                      ) -> SessionInfo:
    """Status, counters, lag and owning worker."""
    info = await load_session(get_redis(request), sid)
    if info is None:
        raise not_found(sid)
    return info


@router.delete("/v1/sessions/{sid}", response_model=SessionInfo,
               summary="Close a session (idempotent)",
               responses={**AUTH_RESPONSES, 404: SESSION_RESPONSES[404]})
async def close_session(sid: str, request: Request,
                        _: Principal = Depends(require(SESSIONS_ADMIN))) -> SessionInfo:
    """Mark closed, append a `close` entry after the last frame, remove the session's control
    entry; every key of the session expires after the retention period."""
    redis, settings = get_redis(request), get_settings(request)
    if not valid_sid(sid):
        raise not_found(sid)
    now = time.time()
    keys = streams.session_keys(sid)
    done = await redis.register_script(CLOSE_LUA)(
        keys=keys, args=[repr(now), repr(now + settings.session_retention_s),
                         settings.session_retention_s])
    if done == 0:
        raise not_found(sid)
    control_id = await redis.hget(streams.session_key(sid), streams.SessionField.CONTROL_ID.value)
    if control_id:  # also on a repeated DELETE, in case an earlier one stopped half-way
        async with redis.pipeline(transaction=False) as p:
            p.xack(streams.CONTROL_STREAM, streams.WORKER_GROUP, control_id)
            p.xdel(streams.CONTROL_STREAM, control_id)
            await p.execute()
    if done == 2:
        metrics.SESSIONS_CLOSED.inc()
    info = await load_session(redis, sid)
    if info is None:
        raise not_found(sid)
    return info


@router.put("/v1/sessions/{sid}/reference", response_model=ReferenceAck,
            summary="Set an explicit reference frame",
            responses={**_ADMIN_RESPONSES,
                       422: error_example("wrong_length", "voltages: expected 928 values")})
async def put_reference(sid: str, body: ReferenceBody, request: Request,
                        _: Principal = Depends(require(SESSIONS_ADMIN, FRAMES_WRITE))
                        ) -> ReferenceAck:
    """Store the reference and queue it in-band, so frames after it use it."""
    redis = get_redis(request)
    m = await open_session_m(redis, sid)
    volts = to_voltages(body.voltages, m, "voltages")
    version = await redis.register_script(REFERENCE_LUA)(
        keys=[streams.session_key(sid), streams.frames_key(sid)],
        args=[streams.voltages_bytes(volts)])
    if version == -1:
        raise not_found(sid)
    if version == -2:
        raise closed(sid)
    return ReferenceAck(reference_version=int(version), n_measurements=m)
