"""Idle expiry: the API closes open sessions that got no frame for `Settings.idle_timeout_s`.

Every API process runs `expire_idle_sessions` in the background, every
`Settings.idle_check_interval_s`. It reads the open sessions from the control stream (one entry
each), and a session's last activity from its frame stream's last entry id (any frame or
reference, on the Redis clock; its creation time before the first). A session idle for longer
than the timeout is closed like a DELETE would, with `close_reason` "idle", which also removes
its control entry, so the autoscaler stops counting it. Closing is idempotent, so API replicas
may race: only the one that closes counts it (`eitmon_sessions_idle_closed_total`).
"""

from __future__ import annotations

import asyncio
import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

from service import metrics
from service.contract.codecs import decode_control, stream_id_ms
from service.contract.fields import CloseReason, SessionField
from service.contract.keys import CONTROL_STREAM, frames_key, session_key
from service.logsafe import RateLimitedLog
from service.sessions import close
from service.settings import Settings

log = logging.getLogger("eitmon.service")
failures = RateLimitedLog(log, interval_s=300.0)

BATCH = 100  # open sessions looked at per pipelined round trip


async def idle_sessions(redis: Redis, idle_s: float) -> list[str]:
    """Open sessions whose last frame-stream entry (or creation) is older than `idle_s`."""
    idle: list[str] = []
    start = "-"
    while True:
        entries = await redis.xrange(CONTROL_STREAM, min=start, max="+", count=BATCH)
        if not entries:
            return idle
        start = b"(" + entries[-1][0]
        sids = [decode_control(fields)[1] for _, fields in entries]
        async with redis.pipeline(transaction=False) as p:
            for sid in sids:
                p.xrevrange(frames_key(sid), count=1)
                p.hget(session_key(sid), SessionField.CREATED_AT.value)
            p.time()
            *replies, now = await p.execute()
        now_ms = now[0] * 1000 + now[1] // 1000
        for i, sid in enumerate(sids):
            last, created = replies[2 * i], replies[2 * i + 1]
            if created is None:
                continue  # gone; the workers drop its control entry
            active_ms = stream_id_ms(last[0][0]) if last else float(created) * 1000
            if now_ms - active_ms > idle_s * 1000:
                idle.append(sid)
        if len(entries) < BATCH:
            return idle


async def expire_idle_once(redis: Redis, settings: Settings) -> int:
    """Close every idle session now; the number this process closed."""
    closed = 0
    for sid in await idle_sessions(redis, settings.idle_timeout_s):
        if await close(redis, sid, CloseReason.IDLE, settings.session_retention_s) == 2:
            metrics.SESSIONS_IDLE_CLOSED.inc()
            log.info("closed session %s: no frame for %d s", sid, settings.idle_timeout_s)
            closed += 1
    return closed


async def expire_idle_sessions(redis: Redis, settings: Settings) -> None:
    """Run `expire_idle_once` every `idle_check_interval_s`, until cancelled."""
    while True:
        await asyncio.sleep(settings.idle_check_interval_s)
        try:
            await expire_idle_once(redis, settings)
        except RedisError as e:
            failures.warning("idle", "idle expiry skipped a round: %s", type(e).__name__)
