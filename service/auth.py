"""Verifying JWT (HS256) bearer tokens, and the FastAPI dependencies that check them.

The scopes and claims are the contract's (`service.contract.tokens`, which also mints tokens).
HTTP: `Authorization: Bearer <token>`. WebSocket: subprotocols `["bearer", "<token>"]`
(the server answers "bearer") or a first text message `{"token": "<token>"}`. Tokens never go
in URLs and are never logged.

A token is refused when its signature, claims or lifetime (exp - iat above
`Settings.token_max_ttl_s`) are wrong (401), when its `jti` is on the revocation list in Redis
(401 revoked_token), when it is a device token (frames:write without sessions:admin) that is
not bound to a session (403 unbound_token), and on a session that its `sessions` claim does
not name (403 session_not_permitted).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from redis.asyncio import Redis

from service.contract.keys import REVOKED_TOKENS
from service.contract.tokens import ALGORITHM, SESSIONS_CLAIM, is_device_only
from service.errors import ApiError
from service.settings import Settings

LEEWAY_S = 5

bearer_scheme = HTTPBearer(auto_error=False, bearerFormat="JWT",
                           description="JWT (HS256) with scopes frames:write, volumes:read, "
                                       "sessions:admin and optionally the sessions it is bound "
                                       "to; mint one with `eitmon token create`")


@dataclass(frozen=True)
class Principal:
    """Who called, with which scopes, on which sessions (None: all), until when."""

    subject: str
    scopes: frozenset[str]
    expires_at: float
    token_id: str
    sessions: frozenset[str] | None = None

    def may_access(self, sid: str) -> bool:
        """True when the token is not bound, or bound to `sid` among others."""
        return self.sessions is None or sid in self.sessions


def decode_token(secret: str, token: str, max_ttl_s: float) -> Principal:
    """Verify a token's signature, claims and lifetime; raises ApiError(401) with reason
    expired_token or invalid_token."""
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], leeway=LEEWAY_S,
                            options={"require": ["sub", "exp", "iat", "jti", "scope"]})
    except jwt.ExpiredSignatureError:
        raise _unauthorized("expired_token", "the bearer token has expired") from None
    except jwt.PyJWTError:
        raise _unauthorized("invalid_token", "the bearer token is invalid") from None
    scope = claims["scope"]
    scopes = scope.split() if isinstance(scope, str) else scope
    if not _strings(scopes):
        raise _unauthorized("invalid_token", "the token's scope claim is malformed")
    sessions = claims.get(SESSIONS_CLAIM)
    if sessions is not None and not _strings(sessions):
        raise _unauthorized("invalid_token", "the token's sessions claim is malformed")
    if float(claims["exp"]) - min(float(claims["iat"]), time.time()) > max_ttl_s:
        raise _unauthorized("invalid_token", f"the token's lifetime exceeds the maximum of "
                                             f"{max_ttl_s:g} s")
    return Principal(subject=str(claims["sub"]), scopes=frozenset(scopes),
                     expires_at=float(claims["exp"]), token_id=str(claims["jti"]),
                     sessions=None if sessions is None else frozenset(sessions))


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(s, str) for s in value)


async def is_revoked(redis: Redis, token_id: str) -> bool:
    """True when the token id is on the revocation list."""
    return await redis.zscore(REVOKED_TOKENS, token_id) is not None


async def verify_token(settings: Settings, redis: Redis, token: str) -> Principal:
    """`decode_token`, then refuse a revoked token (401 revoked_token) and an unbound device
    token (403 unbound_token)."""
    principal = decode_token(settings.secret, token, settings.token_max_ttl_s)
    if await is_revoked(redis, principal.token_id):
        raise _unauthorized("revoked_token", "the bearer token has been revoked")
    if principal.sessions is None and is_device_only(principal.scopes):
        raise ApiError(403, "unbound_token", "a frames:write token must be bound to its "
                                             "session (eitmon token create --session ID)")
    return principal


def check_scope(principal: Principal, allowed: Iterable[str]) -> None:
    """Raise ApiError(403) unless the principal holds one of the allowed scopes."""
    allowed = tuple(allowed)
    if not principal.scopes.intersection(allowed):
        raise ApiError(403, "insufficient_scope",
                       f"this endpoint requires the scope {' or '.join(allowed)}")


def check_session(principal: Principal, sid: str) -> None:
    """Raise ApiError(403, session_not_permitted) unless the token may act on session `sid`."""
    if not principal.may_access(sid):
        raise ApiError(403, "session_not_permitted",
                       "this token is bound to other sessions")


async def authenticate(request: Request, credentials: HTTPAuthorizationCredentials | None,
                       allowed: Iterable[str], sid: str | None = None) -> Principal:
    """The verified principal holding one of `allowed` (and, with `sid`, bound to allow it)."""
    if credentials is None:
        raise _unauthorized("missing_token", "send Authorization: Bearer <token>")
    principal = await verify_token(request.app.state.settings, request.app.state.redis,
                                   credentials.credentials)
    check_scope(principal, allowed)
    if sid is not None:
        check_session(principal, sid)
    return principal


def require(*allowed: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency admitting a bearer token that holds any of `allowed`."""

    async def dependency(request: Request,
                         credentials: HTTPAuthorizationCredentials | None = Depends(
                             bearer_scheme)) -> Principal:
        return await authenticate(request, credentials, allowed)

    return dependency


def require_session(*allowed: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency for routes on one session (`{sid}`): a token holding any of `allowed`
    that may act on that session."""

    async def dependency(sid: str, request: Request,
                         credentials: HTTPAuthorizationCredentials | None = Depends(
                             bearer_scheme)) -> Principal:
        return await authenticate(request, credentials, allowed, sid)

    return dependency


def websocket_token(subprotocols: list[str]) -> str | None:
    """The token from subprotocols `["bearer", "<token>"]`, if offered."""
    for i, proto in enumerate(subprotocols[:-1]):
        if proto.lower() == "bearer":
            return subprotocols[i + 1]
    return None


def _unauthorized(reason: str, detail: str) -> ApiError:
    return ApiError(401, reason, detail, headers={"WWW-Authenticate": "Bearer"})
