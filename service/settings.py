"""Service settings from the environment (pydantic-settings).

The JWT secret comes from `EITMON_JWT_SECRET_FILE` (preferred: a mounted secret) or
`EITMON_JWT_SECRET` (the API then logs a warning: an environment variable is visible to
every process that can read the container's environment); setting both is an error, so that a
stale value never wins silently.
Without either the service refuses to start, unless `EITMON_DEMO=1`, which generates a random
secret for this process only (the `eitmon api` command then prints a token for it).
"""

from __future__ import annotations

import secrets
from pathlib import Path

from pydantic import AliasChoices, Field, PrivateAttr, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIN_SECRET_BYTES = 32
MiB = 1024 * 1024
DAY_S = 86_400


class Settings(BaseSettings):
    """Everything the API process reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="EITMON_", extra="ignore")

    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", description="Redis (or valkey) URL",
        validation_alias=AliasChoices("REDIS_URL", "EITMON_REDIS_URL", "redis_url"))
    jwt_secret: SecretStr | None = Field(None, description="HS256 secret (>= 32 bytes)")
    jwt_secret_file: Path | None = Field(None, description="file holding the HS256 secret")
    demo: bool = Field(False, description="local demo: generate a random secret if none is set")
    max_body_bytes: int = Field(4 * MiB, gt=0, description="largest request body")
    max_batch_frames: int = Field(256, gt=0, description="most frames in one POST")
    viewer_queue: int = Field(2, gt=0, description="volumes buffered per viewer (drop oldest)")
    ws_auth_timeout_s: float = Field(5.0, gt=0, description="wait for a first-message token")
    session_retention_s: int = Field(86_400, gt=0, description="keys of a closed session expire")
    token_max_ttl_s: int = Field(
        7 * DAY_S, gt=0, description="longest token lifetime (exp - iat) the API accepts and "
                                     "`eitmon token create` mints")
    revocation_check_s: float = Field(
        5.0, gt=0, description="how often an open WebSocket re-checks the revocation list")
    seq_window: int = Field(
        100_000, gt=0, description="largest seq jump ahead of the last accepted seq (422 "
                                   "seq_too_far_ahead beyond)")
    allowed_origins: str = Field(
        "", description="comma-separated WebSocket origins allowed besides the API's own, "
                        "e.g. https://central.example.org")
    metrics_port: int | None = Field(
        None, gt=0, lt=65536, description="serve /metrics on this port only (not on the API's)")
    idle_timeout_s: int = Field(
        3600, ge=0, description="an open session with no frame for this long is closed "
                                "(close_reason idle); 0 never closes one")
    idle_check_interval_s: float = Field(30.0, gt=0, description="how often to look for them")
    max_backlog_frames: int = Field(
        6000, gt=0, description="frames a session may hold accepted but not yet processed by a "
                                "worker; more are refused with 429 backlog_full")

    _secret: str = PrivateAttr("")
    _generated: bool = PrivateAttr(False)

    @model_validator(mode="after")
    def _resolve_secret(self) -> Settings:
        if self.jwt_secret is not None and self.jwt_secret_file is not None:
            raise ValueError("set EITMON_JWT_SECRET_FILE or EITMON_JWT_SECRET, not both")
        if self.jwt_secret_file is not None:
            try:
                secret = self.jwt_secret_file.read_text().strip()
            except OSError as e:
                raise ValueError(
                    f"EITMON_JWT_SECRET_FILE: cannot read {self.jwt_secret_file} ({e.strerror})"
                ) from None
        elif self.jwt_secret is not None:
            secret = self.jwt_secret.get_secret_value()
        elif self.demo:
            secret, self._generated = secrets.token_urlsafe(48), True
        else:
            raise ValueError("no JWT secret: set EITMON_JWT_SECRET_FILE or EITMON_JWT_SECRET "
                             "(or EITMON_DEMO=1 for a local demo with a random secret)")
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"the JWT secret must be at least {MIN_SECRET_BYTES} bytes")
        self._secret = secret
        return self

    @property
    def secret(self) -> str:
        """The resolved HS256 secret."""
        return self._secret

    @property
    def secret_from_env(self) -> bool:
        """True when the secret came from EITMON_JWT_SECRET rather than a file."""
        return self.jwt_secret is not None

    @property
    def origin_allow_list(self) -> frozenset[str]:
        """The configured extra WebSocket origins, lower-cased, without trailing slashes."""
        return frozenset(o.strip().rstrip("/").lower() for o in self.allowed_origins.split(",")
                         if o.strip())

    @property
    def secret_generated(self) -> bool:
        """True when demo mode generated the secret (tokens die with the process)."""
        return self._generated

