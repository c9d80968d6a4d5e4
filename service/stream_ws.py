"""`WS /v1/sessions/{id}/stream`: live volumes for a viewer.

Origin: a handshake whose `Origin` header is neither the API's own (the `Host` it was sent to)
nor in `Settings.allowed_origins` is refused with HTTP 403 before anything else; clients that
send no Origin (not a browser) pass.

Auth (scope volumes:read, a token that may read this session), without tokens in URLs: offer
subprotocols `["bearer", "<token>"]` (the server selects "bearer"), or connect without
subprotocols and send `{"token": "..."}` as the first text message within
`ws_auth_timeout_s`. Close codes: 1008 bad or missing token (and mid-stream when the token
expires, or is revoked: checked every `revocation_check_s`), 4404 unknown session, 1011
internal error.

Per volume the server sends a JSON text message (metadata, `"type": "volume"`) and then a
binary message (`service.wire`). Per breath (`breath` policy) it sends one JSON text message
`{"type": "parameters", "session", "id", "seq", "breath": {...}}` (the entry of the session's
parameters stream, as `GET .../parameters` returns it). A viewer that reads slowly loses its
oldest pending messages, never others'.
When the worker's live data-quality summary changes (and on connecting, if there is one), it
sends `{"type": "status", "session", "status": "open", "quality": {"bad_electrodes": [...],
"usable_fraction": x, "median_relative_noise", "flags", "frames", "seq"}}`: the electrodes
(1-based, the model's numbering) flagged and excluded from the reconstruction.
When the session is or becomes failed (a worker gave up on it), the server sends the text
message `{"type": "status", "status": "failed", "reason": ...}` and closes with 1000
"session_failed".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from urllib.parse import urlsplit

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from redis.asyncio import Redis
from redis.exceptions import RedisError

from service import metrics
from service.auth import (
    Principal,
    check_scope,
    check_session,
    is_revoked,
    verify_token,
    websocket_token,
)
from service.contract.tokens import VOLUMES_READ
from service.deps import session_status
from service.errors import ApiError
from service.hub import LatestQueue, ResultHub, StatusMessage, VolumeMessage
from service.logsafe import RateLimitedLog

router = APIRouter()
log = logging.getLogger("eitmon.service")
refusals = RateLimitedLog(log)

NORMAL_CLOSURE = 1000
POLICY_VIOLATION = 1008
INTERNAL_ERROR = 1011
SESSION_NOT_FOUND = 4404


async def _first_message_token(ws: WebSocket, timeout: float) -> str | None:
    """The token of the first message; None if there is none in time; WebSocketDisconnect if
    the client leaves first."""
    try:
        raw = await asyncio.wait_for(ws.receive_text(), timeout)
        doc = json.loads(raw)
    except (asyncio.TimeoutError, ValueError, KeyError, RuntimeError, RecursionError):
        return None
    token = doc.get("token") if isinstance(doc, dict) else None
    return token if isinstance(token, str) else None


def origin_allowed(ws: WebSocket) -> bool:
    """True without an Origin header, for the API's own origin and for configured ones."""
    origin = ws.headers.get("origin")
    if origin is None:
        return True
    origin = origin.strip().rstrip("/").lower()
    if urlsplit(origin).netloc == ws.headers.get("host", "").lower():
        return True
    return origin in ws.app.state.settings.origin_allow_list


def _refused(reason: str) -> None:
    """Count a viewer refused (or gone) before streaming; one rate-limited line, no traceback."""
    metrics.WS_REFUSED.labels(reason).inc()
    refusals.warning(reason, "websocket viewer refused: %s", reason)


async def _close_quietly(ws: WebSocket, code: int, reason: str) -> None:
    """Close, unless the client has gone already."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
        await ws.close(code, reason)


async def _authenticate(ws: WebSocket, sid: str) -> Principal | None:
    """Accept the socket and check the token; on failure close with 1008 and return None."""
    settings = ws.app.state.settings
    token = websocket_token(list(ws.scope.get("subprotocols") or []))
    await ws.accept(subprotocol="bearer" if token is not None else None)
    if token is None:
        try:
            token = await _first_message_token(ws, settings.ws_auth_timeout_s)
        except WebSocketDisconnect:
            _refused("disconnected_before_auth")
            return None
    if token is None:
        _refused("missing_token")
        await _close_quietly(ws, POLICY_VIOLATION, "missing_token")
        return None
    try:
        principal = await verify_token(settings, ws.app.state.redis, token)
        check_scope(principal, (VOLUMES_READ,))
        check_session(principal, sid)
    except ApiError as e:
        _refused(e.reason)
        await _close_quietly(ws, POLICY_VIOLATION, e.reason)
        return None
    return principal


async def _watch_token(redis: Redis, principal: Principal, interval: float) -> str:
    """Wait until the token expires ("expired_token") or is revoked ("revoked_token"),
    checking the revocation list every `interval` seconds."""
    while True:
        left = principal.expires_at - time.time()
        if left <= 0:
            return "expired_token"
        await asyncio.sleep(min(left, interval))
        try:
            if await is_revoked(redis, principal.token_id):
                return "revoked_token"
        except RedisError:  # the next check retries; volumes stop anyway while Redis is down
            continue


async def _send_loop(ws: WebSocket, q: LatestQueue) -> None:
    """Send volumes and parameters until the session's final status message (then return)."""
    while True:
        msg = await q.get()
        await ws.send_text(msg.meta)
        if isinstance(msg, StatusMessage):
            return
        if isinstance(msg, VolumeMessage):
            await ws.send_bytes(msg.binary)


async def _receive_loop(ws: WebSocket) -> None:
    """Drain client messages (ignored) until the client goes away."""
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return


@router.websocket("/v1/sessions/{sid}/stream")
async def stream(ws: WebSocket, sid: str) -> None:
    if not origin_allowed(ws):
        await ws.close(POLICY_VIOLATION, "origin_not_allowed")  # before accept: HTTP 403
        return
    try:
        principal = await _authenticate(ws, sid)
    except RedisError:
        await ws.close(INTERNAL_ERROR, "redis_unavailable")
        return
    if principal is None:
        return
    hub: ResultHub = ws.app.state.hub
    try:
        await session_status(ws.app.state.redis, sid)
    except ApiError:
        await ws.close(SESSION_NOT_FOUND, "session_not_found")
        return
    except RedisError:
        await ws.close(INTERNAL_ERROR, "redis_unavailable")
        return
    q = hub.subscribe(sid)
    watch = asyncio.create_task(_watch_token(ws.app.state.redis, principal,
                                             ws.app.state.settings.revocation_check_s))
    sender = asyncio.create_task(_send_loop(ws, q))
    tasks = {sender, asyncio.create_task(_receive_loop(ws)), watch}
    token_end: str | None = None
    ended = False
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        token_end = watch.result() if watch in done else None
        ended = sender in done and sender.exception() is None
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, Exception):
                await t
        await hub.unsubscribe(sid, q)
    if token_end is not None:
        with contextlib.suppress(Exception):
            await ws.close(POLICY_VIOLATION, token_end)
    elif ended:
        with contextlib.suppress(Exception):
            await ws.close(NORMAL_CLOSURE, "session_failed")
