"""Verifying JWT (HS256) bearer tokens, and the FastAPI dependencies that check them.

The scopes and claims are the contract's (`service.contract.tokens`, which also mints tokens).
HTTP: `Authorization: Bearer <token>`. WebSocket: subprotocols `["bearer", "<token>"]`
(the server answers "bearer") or a first text message `{"token": "<token>"}`. Tokens never go
in URLs and are never logged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.contract.tokens import ALGORITHM
from service.errors import ApiError

LEEWAY_S = 5

bearer_scheme = HTTPBearer(auto_error=False, bearerFormat="JWT",
                           description="JWT (HS256) with scopes frames:write, volumes:read, "
                                       "sessions:admin; mint one with `eitmon token create`")


@dataclass(frozen=True)
class Principal:
    """Who called, with which scopes, until when."""

    subject: str
    scopes: frozenset[str]
    expires_at: float
    token_id: str


def decode_token(secret: str, token: str) -> Principal:
    """Verify a token; raises ApiError(401) with reason expired_token or invalid_token."""
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], leeway=LEEWAY_S,
                            options={"require": ["sub", "exp", "iat", "jti", "scope"]})
    except jwt.ExpiredSignatureError:
        raise _unauthorized("expired_token", "the bearer token has expired") from None
    except jwt.PyJWTError:
        raise _unauthorized("invalid_token", "the bearer token is invalid") from None
    scope = claims["scope"]
    scopes = scope.split() if isinstance(scope, str) else scope
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        raise _unauthorized("invalid_token", "the token's scope claim is malformed")
    return Principal(subject=str(claims["sub"]), scopes=frozenset(scopes),
                     expires_at=float(claims["exp"]), token_id=str(claims["jti"]))


def check_scope(principal: Principal, allowed: Iterable[str]) -> None:
    """Raise ApiError(403) unless the principal holds one of the allowed scopes."""
    allowed = tuple(allowed)
    if not principal.scopes.intersection(allowed):
        raise ApiError(403, "insufficient_scope",
                       f"this endpoint requires the scope {' or '.join(allowed)}")


def authenticate(request: Request, credentials: HTTPAuthorizationCredentials | None,
                 allowed: Iterable[str]) -> Principal:
    if credentials is None:
        raise _unauthorized("missing_token", "send Authorization: Bearer <token>")
    principal = decode_token(request.app.state.settings.secret, credentials.credentials)
    check_scope(principal, allowed)
    return principal


def require(*allowed: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency admitting a bearer token that holds any of `allowed`."""

    async def dependency(request: Request,
                         credentials: HTTPAuthorizationCredentials | None = Depends(
                             bearer_scheme)) -> Principal:
        return authenticate(request, credentials, allowed)

    return dependency


def websocket_token(subprotocols: list[str]) -> str | None:
    """The token from subprotocols `["bearer", "<token>"]`, if offered."""
    for i, proto in enumerate(subprotocols[:-1]):
        if proto.lower() == "bearer":
            return subprotocols[i + 1]
    return None


def _unauthorized(reason: str, detail: str) -> ApiError:
    return ApiError(401, reason, detail, headers={"WWW-Authenticate": "Bearer"})
