"""Bearer tokens (JWT, HS256): the scopes and the claims that the API verifies
(`service.auth`) and that its clients mint with the shared secret (`eitmon token create`, the
demo).

Claims: sub, scope (list of strings; the API accepts a space-separated string too), iat, exp,
jti.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable

import jwt

FRAMES_WRITE = "frames:write"
VOLUMES_READ = "volumes:read"
SESSIONS_ADMIN = "sessions:admin"
SCOPES = (FRAMES_WRITE, VOLUMES_READ, SESSIONS_ADMIN)
ALGORITHM = "HS256"


def create_token(secret: str, scopes: Iterable[str], ttl_s: int, subject: str = "eitmon",
                 now: float | None = None) -> str:
    """Mint a signed token; unknown scopes are refused."""
    scopes = list(dict.fromkeys(scopes))
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise ValueError(f"scopes must be among {', '.join(SCOPES)}")
    iat = int(time.time() if now is None else now)
    claims = {"sub": subject, "scope": scopes, "iat": iat, "exp": iat + int(ttl_s),
              "jti": uuid.uuid4().hex}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)
