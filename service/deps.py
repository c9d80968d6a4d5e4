"""Shared request-scoped helpers: the Redis client, settings, session lookups."""

from __future__ import annotations

from fastapi import Request
from redis.asyncio import Redis

from service.contract.fields import SessionField
from service.contract.keys import SESSION_ID, session_key
from service.errors import ApiError
from service.settings import Settings


def get_redis(request: Request) -> Redis:
    return request.app.state.redis


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def not_found(sid: str) -> ApiError:
    return ApiError(404, "session_not_found", f"no session {sid[:40]}")


def closed(sid: str) -> ApiError:
    return ApiError(409, "session_closed", f"session {sid} is closed")


def failed(sid: str) -> ApiError:
    return ApiError(409, "session_failed",
                    f"session {sid} failed: the worker could not reconstruct it")


def valid_sid(sid: str) -> bool:
    return bool(SESSION_ID.match(sid))


async def session_status(redis: Redis, sid: str) -> str:
    """The session's status ("open", "closed", "failed"); ApiError(404) for an unknown or
    malformed id."""
    if not valid_sid(sid):
        raise not_found(sid)
    raw = await redis.hget(session_key(sid), SessionField.STATUS.value)
    if raw is None:
        raise not_found(sid)
    return raw.decode()

