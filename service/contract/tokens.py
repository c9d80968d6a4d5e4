"""Bearer tokens (JWT, HS256): the scopes and the claims that the API verifies
(`service.auth`) and that its clients mint with the shared secret (`eitmon token create`, the
demo).

Claims: sub, scope (list of strings; the API accepts a space-separated string too), iat, exp,
jti, and `sessions`, the list of session ids the token may act on (absent: every session).

The token model (docs/service-api.md, "Tokens"):
- a device token holds frames:write and is bound to its patient's session (`sessions`, one
  id); the API refuses a frames:write token that is neither bound nor an admin token;
- a viewer token holds volumes:read, for every session or only the named ones;
- an admin token holds sessions:admin (and may act on every session unless bound).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable

import jwt

from service.contract.keys import SESSION_ID

FRAMES_WRITE = "frames:write"
VOLUMES_READ = "volumes:read"
SESSIONS_ADMIN = "sessions:admin"
SCOPES = (FRAMES_WRITE, VOLUMES_READ, SESSIONS_ADMIN)
ALGORITHM = "HS256"
SESSIONS_CLAIM = "sessions"


def is_device_only(scopes: Iterable[str]) -> bool:
    """True for scopes that may write frames but not administer sessions: such a token must be
    bound to its session."""
    scopes = set(scopes)
    return FRAMES_WRITE in scopes and SESSIONS_ADMIN not in scopes


def create_token(secret: str, scopes: Iterable[str], ttl_s: int, subject: str = "eitmon",
                 now: float | None = None, sessions: Iterable[str] | None = None) -> str:
    """Mint a signed token; unknown scopes, malformed session ids and an unbound device token
    (frames:write without sessions:admin) are refused with ValueError."""
    scopes = list(dict.fromkeys(scopes))
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise ValueError(f"scopes must be among {', '.join(SCOPES)}")
    bound = None if sessions is None else list(dict.fromkeys(sessions))
    if bound is not None and (not bound or not all(SESSION_ID.match(s) for s in bound)):
        raise ValueError("sessions must be session ids (32 lowercase hex digits)")
    if is_device_only(scopes) and (bound is None or len(bound) != 1):
        raise ValueError(f"a {FRAMES_WRITE} token is bound to exactly one session "
                         f"(--session ID), unless it also holds {SESSIONS_ADMIN}")
    iat = int(time.time() if now is None else now)
    claims: dict[str, object] = {"sub": subject, "scope": scopes, "iat": iat,
                                 "exp": iat + int(ttl_s), "jti": uuid.uuid4().hex}
    if bound is not None:
        claims[SESSIONS_CLAIM] = bound
    return jwt.encode(claims, secret, algorithm=ALGORITHM)
