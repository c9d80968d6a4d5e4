"""Session routes: create, list, inspect, close, set the reference."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any, TypeVar

import numpy as np
from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ValidationError
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from service import metrics
from service.auth import Principal, require, require_session
from service.contract.belts import resolve_belt
from service.contract.codecs import (
    JsonReport,
    SessionQuality,
    WarmupProgress,
    decode_lease,
    encode_close,
    encode_control,
    encode_reference,
    flat,
    stream_id_ms,
    voltages_bytes,
)
from service.contract.errors import describe_error
from service.contract.fields import (
    DROPPED_PREFIX,
    REJECTED_PREFIX,
    CloseReason,
    Counter,
    ProgressField,
    SessionField,
    SessionStatus,
)
from service.contract.geometry import GEOMETRY_PRESETS, GeometrySpec, resolve_geometry
from service.contract.grid import resolve_grid
from service.contract.keys import (
    CONTROL_STREAM,
    SESSIONS_INDEX,
    WORKER_GROUP,
    counters_key,
    frames_key,
    lease_key,
    progress_key,
    session_key,
    session_keys,
)
from service.contract.limits import LimitExceeded, SessionLimits, reference_problem
from service.contract.patient import PatientSpec, patient_geometry
from service.contract.protocol import PROTOCOL_PRESETS, resolve_protocol
from service.contract.scripts import FAILED, MISSING, NOT_OPEN, registered
from service.contract.session import SessionConfig, default_policy
from service.contract.tokens import FRAMES_WRITE, SESSIONS_ADMIN, VOLUMES_READ
from service.deps import closed, failed, get_redis, get_settings, not_found, valid_sid
from service.errors import (
    AUTH_RESPONSES,
    BODY_RESPONSES,
    REDIS_RESPONSES,
    SESSION_RESPONSES,
    ApiError,
    error_example,
)
from service.frames import open_session_m, to_voltages
from service.models import (
    SESSION_CREATE_EXAMPLES,
    Counters,
    ExplicitReference,
    Lag,
    QualityInfo,
    ReferenceAck,
    ReferenceBody,
    SessionCreate,
    SessionInfo,
    SessionList,
    WarmupInfo,
    WorkerInfo,
)

router = APIRouter(tags=["sessions"])

LIST_BATCH = 100  # sessions read per pipelined batch while listing
TIE_MARGIN = 16
LIMITS = SessionLimits()

_ADMIN_RESPONSES = {**AUTH_RESPONSES, **SESSION_RESPONSES}


def _spec_error(reason: str, exc: Exception) -> ApiError:
    if isinstance(exc, ValidationError):
        return ApiError(422, reason, describe_error(exc))
    return ApiError(422, reason, str(exc))


def resolve_config(body: SessionCreate, limits: SessionLimits = LIMITS) -> SessionConfig:
    """Validate geometry/protocol/grid within `limits`; ApiError(422) with the reason and the
    field. Files are not read. Bounded by the limits (< 50 ms for any accepted spec, see
    docs/service-api.md), but still CPU work: the route runs it in a worker thread."""
    geometry, geometry_preset = _geometry(body, limits)
    protocol_spec = (resolve_belt(body.belt).protocol
                     if body.belt is not None and "protocol" not in body.model_fields_set
                     else body.protocol)
    protocol_preset = protocol_spec if isinstance(protocol_spec, str) else None
    if protocol_preset is not None and not (protocol_preset in PROTOCOL_PRESETS
                                            or re.fullmatch(r"skip\d{1,3}", protocol_preset)):
        raise ApiError(422, "invalid_protocol", f"protocol: unknown preset; presets: "
                                                f"{', '.join(PROTOCOL_PRESETS)} or skipK")
    n_electrodes = geometry.electrodes.count
    try:
        protocol = resolve_protocol(protocol_spec)
        limits.check_protocol(protocol)
        built = protocol.build(n_electrodes)
    except (ValueError, TypeError) as e:
        raise _spec_error("invalid_protocol", e) from None
    try:
        grid = resolve_grid(body.grid)
        limits.check_grid(grid)
    except (ValueError, TypeError) as e:
        raise _spec_error("invalid_grid", e) from None
    try:
        limits.check_model(geometry, built, grid)
    except LimitExceeded as e:
        raise _spec_error("model_too_large", e) from None
    m = built.n_measurements
    reference = ({"mode": "explicit"} if isinstance(body.reference, ExplicitReference)
                 else body.reference.model_dump())
    return SessionConfig(
        geometry=geometry.model_dump(mode="json"), protocol=protocol.model_dump(mode="json"),
        grid=grid.shape, method=body.method, reference=reference,
        realtime=body.realtime or default_policy(body.method),
        n_electrodes=n_electrodes, n_measurements=m, geometry_preset=geometry_preset,
        protocol_preset=protocol_preset, belt=body.belt,
        patient=body.patient.model_dump(mode="json") if body.patient is not None else None,
        position=body.position)


def _geometry(body: SessionCreate, limits: SessionLimits) -> tuple[GeometrySpec, str | None]:
    """The geometry and its preset name: the `geometry` asked for, or the patient's thorax with
    the belt (`patient_geometry`); ApiError(422) naming the field."""
    clinical = body.belt is not None or body.patient is not None
    if clinical and "geometry" in body.model_fields_set:
        raise ApiError(422, "invalid_geometry", "geometry: give either a geometry, or a belt "
                                                "and/or a patient (their thorax), not both")
    geometry_preset = None
    try:
        if clinical:
            geometry = patient_geometry(body.patient or PatientSpec(), resolve_belt(body.belt))
        else:
            geometry_preset = body.geometry if isinstance(body.geometry, str) else None
            if geometry_preset is not None and geometry_preset not in GEOMETRY_PRESETS:
                raise ApiError(422, "invalid_geometry", f"geometry: unknown preset; presets: "
                                                        f"{', '.join(GEOMETRY_PRESETS)}")
            geometry = resolve_geometry(body.geometry)
        limits.check_geometry(geometry)
    except (ValueError, TypeError) as e:
        raise _spec_error("invalid_geometry", e) from None
    return geometry, geometry_preset


def usable_reference(values: Any, m: int, where: str) -> np.ndarray:
    """M finite voltages that can normalise frames; ApiError(422) otherwise (`zero_reference`
    for an all-zero or near-zero one)."""
    volts = to_voltages(values, m, where)
    problem = reference_problem(volts)
    if problem is not None:
        raise ApiError(422, "zero_reference", f"{where}: {problem}")
    return volts


async def load_sessions(redis: Redis, sids: list[str]) -> list[SessionInfo | None]:
    """The API view of sessions from their hashes, counters, the worker's progress and lease
    (None for an unknown id), in two pipelines: one connection however many sessions."""
    if not sids:
        return []
    async with redis.pipeline(transaction=False) as p:
        for sid in sids:
            p.hgetall(session_key(sid))
            p.hgetall(counters_key(sid))
            p.hgetall(progress_key(sid))
            p.get(lease_key(sid))
            p.pttl(lease_key(sid))
        p.time()
        *replies, now = await p.execute()
    rows = [replies[i:i + 5] for i in range(0, len(replies), 5)]
    lagging = [(sid, row[2]) for sid, row in zip(sids, rows, strict=True)
               if row[0] and _lag_frames(row[1])]
    firsts: dict[str, float | None] = {}
    if lagging:
        async with redis.pipeline(transaction=False) as p:
            for sid, progress in lagging:
                last_id = progress.get(ProgressField.LAST_ID.value.encode())
                p.xrange(frames_key(sid), min=b"(" + last_id if last_id else b"-", max="+",
                         count=1)
            now_ms = now[0] * 1000 + now[1] // 1000
            for (sid, _), first in zip(lagging, await p.execute(), strict=True):
                firsts[sid] = (max(now_ms - stream_id_ms(first[0][0]), 0) / 1000
                               if first else None)
    return [_session_info(sid, *row, firsts.get(sid, 0.0)) if row[0] else None
            for sid, row in zip(sids, rows, strict=True)]


async def load_session(redis: Redis, sid: str) -> SessionInfo | None:
    """One session's API view (None if unknown or malformed)."""
    return (await load_sessions(redis, [sid]))[0] if valid_sid(sid) else None


def _lag_frames(counts: dict[bytes, bytes]) -> int:
    c = {k.decode(): int(v) for k, v in counts.items()}
    done = (c.get(Counter.RECONSTRUCTED, 0) + c.get(Counter.COALESCED, 0)
            + c.get(Counter.DROPPED, 0))
    return max(c.get(Counter.ACCEPTED, 0) - done, 0)


def _session_info(sid: str, sess: dict[bytes, bytes], counts: dict[bytes, bytes],
                  progress: dict[bytes, bytes], lease: bytes | None, pttl: int,
                  lag_seconds: float | None) -> SessionInfo:
    s = {k.decode(): v for k, v in sess.items()}
    c = {k.decode(): int(v) for k, v in counts.items()}
    cfg = SessionConfig.from_json(s[SessionField.CONFIG])
    worker = None
    if lease is not None:
        le = decode_lease(lease)
        worker = WorkerInfo(id=le.worker, epoch=le.epoch, lease_ttl_ms=max(int(pttl), 0))
    last_seq = int(s.get(SessionField.LAST_SEQ, b"-1"))
    label = s.get(SessionField.PATIENT_LABEL)
    bed = s.get(SessionField.BED)
    reason = s.get(SessionField.FAILURE_REASON)
    close_reason = s.get(SessionField.CLOSE_REASON)
    settings = {k: v for k, v in cfg.__dict__.items() if k not in ("n_electrodes",
                                                                   "n_measurements")}
    settings["grid"] = list(cfg.grid)
    return SessionInfo(
        id=sid, status=s[SessionField.STATUS].decode(),
        failure_reason=reason.decode(errors="replace") if reason is not None else None,
        created_at=float(s[SessionField.CREATED_AT]),
        closed_at=_seconds(s.get(SessionField.CLOSED_AT)),
        close_reason=close_reason.decode() if close_reason is not None else None,
        expires_at=_seconds(s.get(SessionField.EXPIRES_AT)),
        patient_label=label.decode() if label else None, bed=bed.decode() if bed else None,
        n_electrodes=cfg.n_electrodes,
        n_measurements=cfg.n_measurements, grid=list(cfg.grid), mask_shape=list(cfg.grid),
        settings=settings, reference_version=int(s.get(SessionField.REFERENCE_VERSION, b"0")),
        last_seq=last_seq if last_seq >= 0 else None,
        counters=Counters(
            **{counter.value: c.get(counter, 0) for counter in Counter},
            rejected_by_reason={k.removeprefix(REJECTED_PREFIX): v for k, v in c.items()
                                if k.startswith(REJECTED_PREFIX)},
            dropped_by_reason={k.removeprefix(DROPPED_PREFIX): v for k, v in c.items()
                               if k.startswith(DROPPED_PREFIX)}),
        lag=Lag(frames=_lag_frames(counts), seconds=lag_seconds), worker=worker,
        quality=_from_progress(progress.get(ProgressField.QUALITY.value.encode()),
                               SessionQuality, QualityInfo),
        warmup=_from_progress(progress.get(ProgressField.WARMUP.value.encode()),
                              WarmupProgress, WarmupInfo))


M = TypeVar("M", bound=BaseModel)


def _from_progress(raw: bytes | None, codec: type[JsonReport], info: type[M]) -> M | None:
    """A JSON field of the worker's progress hash (`codec`) as `info`, or None (none yet, or
    malformed)."""
    if raw is None:
        return None
    try:
        return info(**codec.from_json(raw).__dict__)
    except ValueError:
        return None


def _seconds(raw: bytes | None) -> float | None:
    return float(raw) if raw is not None else None


async def ensure_control_group(redis: Redis) -> None:
    """Create the workers' consumer group on the control stream (from id 0) unless it exists."""
    try:
        await redis.xgroup_create(CONTROL_STREAM, WORKER_GROUP, id="0",
                                  mkstream=True)
    except ResponseError as e:
        if "BUSYGROUP" not in str(e):
            raise


@router.post("/v1/sessions", status_code=201, response_model=SessionInfo,
             summary="Open a session (every field has a default)",
             responses={**AUTH_RESPONSES, **BODY_RESPONSES, 503: REDIS_RESPONSES,
                        422: error_example("invalid_geometry", "electrodes.width: ...")})
async def create_session(
    request: Request,
    body: SessionCreate = Body(openapi_examples=SESSION_CREATE_EXAMPLES),
    _: Principal = Depends(require(SESSIONS_ADMIN)),
) -> SessionInfo:
    """Validate the settings, write the session, its counters and its frame stream (with the
    worker's consumer group), then add its entry to the control stream."""
    redis = get_redis(request)
    cfg = await run_in_threadpool(resolve_config, body)
    reference = None
    if isinstance(body.reference, ExplicitReference):
        reference = usable_reference(body.reference.voltages, cfg.n_measurements,
                                     "reference.voltages")
    sid, now = uuid.uuid4().hex, time.time()
    fields: dict[str, Any] = {
        SessionField.STATUS.value: SessionStatus.OPEN.value,
        SessionField.CREATED_AT.value: repr(now),
        SessionField.CONFIG.value: cfg.to_json(),
        SessionField.N_MEASUREMENTS.value: cfg.n_measurements,
        SessionField.LAST_SEQ.value: -1,
        SessionField.REFERENCE_VERSION.value: 0 if reference is None else 1,
    }
    if body.patient_label:
        fields[SessionField.PATIENT_LABEL.value] = body.patient_label
    if body.bed:
        fields[SessionField.BED.value] = body.bed
    if reference is not None:
        fields[SessionField.REFERENCE.value] = voltages_bytes(reference)
    async with redis.pipeline(transaction=True) as p:
        p.hset(session_key(sid), mapping=fields)
        p.hset(counters_key(sid), mapping={c.value: 0 for c in Counter})
        if reference is not None:
            p.xadd(frames_key(sid), encode_reference(reference))
        p.xgroup_create(frames_key(sid), WORKER_GROUP, id="0", mkstream=True)
        await p.execute()
    await redis.zadd(SESSIONS_INDEX, {sid: now})
    await ensure_control_group(redis)
    control_id = await redis.xadd(CONTROL_STREAM, encode_control("open", sid, now))
    await redis.hset(session_key(sid), SessionField.CONTROL_ID.value, control_id)
    metrics.SESSIONS_OPENED.inc()
    info = await load_session(redis, sid)
    assert info is not None
    return info


_CURSOR = re.compile(r"^(\d+(?:\.\d+)?(?:e[+-]?\d+)?)-([0-9a-f]{32})$")


def _cursor(info: SessionInfo) -> str:
    """Where the next page starts: after this session (index score and id)."""
    return f"{info.created_at!r}-{info.id}"


def _after(cursor: str | None) -> tuple[float, str] | None:
    """(score, id) of the cursor (the query pattern has checked its form)."""
    match = _CURSOR.match(cursor) if cursor is not None else None
    return (float(match[1]), match[2]) if match else None


@router.get("/v1/sessions", response_model=SessionList,
            summary="List sessions, newest first, a page at a time",
            responses={**AUTH_RESPONSES, 503: REDIS_RESPONSES})
async def list_sessions(
    request: Request,
    status: SessionStatus | None = Query(None, description="filter by status"),
    limit: int = Query(100, ge=1, le=1000, description="most sessions in this page"),
    cursor: str | None = Query(None, pattern=_CURSOR.pattern,
                               description="next_cursor of the previous page"),
    principal: Principal = Depends(require(SESSIONS_ADMIN, VOLUMES_READ)),
) -> SessionList:
    """A page of sessions from the index, read in a few pipelined batches (one Redis
    connection, however large the page, so a list never starves frame ingest); ids whose keys
    expired are pruned from the index on the way. A token bound to sessions sees only those."""
    redis = get_redis(request)
    after = _after(cursor)
    out: list[SessionInfo] = []
    more = True
    while len(out) < limit and more:
        # the cursor's own score again (the few sessions created in the same instant sort by
        # id), plus a margin for them
        scored = await redis.zrevrangebyscore(
            SESSIONS_INDEX, "+inf" if after is None else after[0], "-inf", start=0,
            num=LIST_BATCH + TIE_MARGIN, withscores=True)
        newer = [(m.decode(), score) for m, score in scored]
        ids = [(sid, score) for sid, score in newer
               if after is None or score < after[0] or sid < after[1]]
        more = len(ids) > LIST_BATCH or len(scored) == LIST_BATCH + TIE_MARGIN
        ids = ids[:LIST_BATCH]
        if not ids:
            break
        after = (ids[-1][1], ids[-1][0])
        ids = [(sid, score) for sid, score in ids if principal.may_access(sid)]
        infos = await load_sessions(redis, [sid for sid, _ in ids])
        gone = [sid for (sid, _), info in zip(ids, infos, strict=True) if info is None]
        if gone:
            await redis.zrem(SESSIONS_INDEX, *gone)
        out += [i for i in infos if i is not None and (status is None or i.status == status)]
    page = out[:limit]
    full = len(out) > limit or (len(page) == limit and more)
    return SessionList(sessions=page, next_cursor=_cursor(page[-1]) if full and page else None)


@router.get("/v1/sessions/{sid}", response_model=SessionInfo, summary="Session status",
            responses={**AUTH_RESPONSES, 404: SESSION_RESPONSES[404], 503: REDIS_RESPONSES})
async def get_session(sid: str, request: Request,
                      _: Principal = Depends(require_session(SESSIONS_ADMIN, VOLUMES_READ))
                      ) -> SessionInfo:
    """Status, counters, lag and owning worker."""
    info = await load_session(get_redis(request), sid)
    if info is None:
        raise not_found(sid)
    return info


async def close(redis: Redis, sid: str, reason: CloseReason, retention_s: int) -> int:
    """Mark closed (with the reason), append a `close` entry after the last frame, remove the
    session's control entry; every key of the session expires after `retention_s`. Returns 0
    (no such session), 1 (closed already) or 2 (closed now, counted)."""
    now = time.time()
    done = await registered(redis).close(
        keys=session_keys(sid), args=[repr(now), repr(now + retention_s), retention_s,
                                      reason.value, *flat(encode_close())])
    if done == 0:
        return 0
    control_id = await redis.hget(session_key(sid), SessionField.CONTROL_ID.value)
    if control_id:  # also on a repeated close, in case an earlier one stopped half-way
        async with redis.pipeline(transaction=False) as p:
            p.xack(CONTROL_STREAM, WORKER_GROUP, control_id)
            p.xdel(CONTROL_STREAM, control_id)
            await p.execute()
    if done == 2:
        metrics.SESSIONS_CLOSED.inc()
    return int(done)


@router.delete("/v1/sessions/{sid}", response_model=SessionInfo,
               summary="Close a session (idempotent)",
               responses={**AUTH_RESPONSES, 404: SESSION_RESPONSES[404], 503: REDIS_RESPONSES})
async def close_session(sid: str, request: Request,
                        _: Principal = Depends(require_session(SESSIONS_ADMIN))
                        ) -> SessionInfo:
    """Mark closed, append a `close` entry after the last frame, remove the session's control
    entry; every key of the session expires after the retention period."""
    redis, settings = get_redis(request), get_settings(request)
    if not valid_sid(sid) or await close(redis, sid, CloseReason.DELETED,
                                         settings.session_retention_s) == 0:
        raise not_found(sid)
    info = await load_session(redis, sid)
    if info is None:
        raise not_found(sid)
    return info


@router.put("/v1/sessions/{sid}/reference", response_model=ReferenceAck,
            summary="Set an explicit reference frame",
            responses={**_ADMIN_RESPONSES, **BODY_RESPONSES, 503: REDIS_RESPONSES,
                       422: error_example("wrong_length", "voltages: expected 928 values")})
async def put_reference(sid: str, body: ReferenceBody, request: Request,
                        _: Principal = Depends(require_session(SESSIONS_ADMIN, FRAMES_WRITE))
                        ) -> ReferenceAck:
    """Store the reference and queue it in-band, so frames after it use it."""
    redis = get_redis(request)
    m = await open_session_m(redis, sid)
    volts = usable_reference(body.voltages, m, "voltages")
    version = await registered(redis).reference(
        keys=[session_key(sid), frames_key(sid)],
        args=[voltages_bytes(volts), *flat(encode_reference(volts))])
    if version == MISSING:
        raise not_found(sid)
    if version == FAILED:
        raise failed(sid)
    if version == NOT_OPEN:
        raise closed(sid)
    return ReferenceAck(reference_version=int(version), n_measurements=m)
