"""`WS /v1/sessions/{id}/stream`: live volumes for a viewer.

Auth (scope volumes:read), without tokens in URLs: offer subprotocols `["bearer", "<token>"]`
(the server selects "bearer"), or connect without subprotocols and send `{"token": "..."}` as
the first text message within `ws_auth_timeout_s`. Close codes: 1008 bad or missing token (and
when the token expires mid-stream), 4404 unknown session, 1011 internal error.

Per volume the server sends a JSON text message (metadata, `"type": "volume"`) and then a
binary message (`service.wire`). Per breath (`breath` policy) it sends one JSON text message
`{"type": "parameters", "session", "id", "seq", "breath": {...}}` (the entry of the session's
parameters stream, as `GET .../parameters` returns it). A viewer that reads slowly loses its
oldest pending messages, never others'.
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

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from redis.exceptions import RedisError

from service.auth import Principal, check_scope, decode_token, websocket_token
from service.contract.tokens import VOLUMES_READ
from service.deps import session_status
from service.errors import ApiError
from service.hub import LatestQueue, ResultHub, StatusMessage, VolumeMessage

router = APIRouter()
log = logging.getLogger("eitmon.service")

NORMAL_CLOSURE = 1000
POLICY_VIOLATION = 1008
INTERNAL_ERROR = 1011
SESSION_NOT_FOUND = 4404


async def _first_message_token(ws: WebSocket, timeout: float) -> str | None:
    try:
        raw = await asyncio.wait_for(ws.receive_text(), timeout)
        doc = json.loads(raw)
    except (asyncio.TimeoutError, ValueError, KeyError, RuntimeError):
        return None
    token = doc.get("token") if isinstance(doc, dict) else None
    return token if isinstance(token, str) else None


async def _authenticate(ws: WebSocket) -> Principal | None:
    """Accept the socket and check the token; on failure close with 1008 and return None."""
    settings = ws.app.state.settings
    token = websocket_token(list(ws.scope.get("subprotocols") or []))
    await ws.accept(subprotocol="bearer" if token is not None else None)
    if token is None:
        token = await _first_message_token(ws, settings.ws_auth_timeout_s)
    if token is None:
        await ws.close(POLICY_VIOLATION, "missing_token")
        return None
    try:
        principal = decode_token(settings.secret, token)
        check_scope(principal, (VOLUMES_READ,))
    except ApiError as e:
        await ws.close(POLICY_VIOLATION, e.reason)
        return None
    return principal


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
    principal = await _authenticate(ws)
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
    expiry = max(principal.expires_at - time.time(), 0.0)
    timer = asyncio.create_task(asyncio.sleep(expiry))
    sender = asyncio.create_task(_send_loop(ws, q))
    tasks = {sender, asyncio.create_task(_receive_loop(ws)), timer}
    expired = ended = False
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        expired = timer in done
        ended = sender in done and sender.exception() is None
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, Exception):
                await t
        await hub.unsubscribe(sid, q)
    if expired:
        with contextlib.suppress(Exception):
            await ws.close(POLICY_VIOLATION, "expired_token")
    elif ended:
        with contextlib.suppress(Exception):
            await ws.close(NORMAL_CLOSURE, "session_failed")
