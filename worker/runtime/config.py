"""Worker settings from the environment (pydantic-settings, prefix `EITMON_`)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.forward.cache import cache_dir


def default_worker_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class WorkerConfig(BaseSettings):
    """Everything `eitmon worker` reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="EITMON_", extra="ignore")

    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", description="Redis (or valkey) URL",
        validation_alias=AliasChoices("REDIS_URL", "EITMON_REDIS_URL", "redis_url"))
    worker_name: str = Field(default_factory=default_worker_name, min_length=1,
                             pattern=r"^[A-Za-z0-9._-]+$",
                             description="consumer name and lease owner (unique per worker)")
    checkpoint_dir: Path | None = Field(None, description="default: <EITMON_CACHE_DIR>/checkpoints")
    device: Literal["cpu", "cuda", "auto"] = Field("auto", description="main method's device")
    sessions_per_worker: int = Field(4, gt=0, description="most sessions owned at once")
    lease_ms: int = Field(10_000, ge=200, description="lease time to live")
    lease_renew_ms: int = Field(3_000, ge=50, description="renew every ... (< lease_ms / 2)")
    checkpoint_every: int = Field(50, gt=0, description="frames between checkpoints")
    idle_evict_s: float = Field(300.0, gt=0, description="evict a session without frames")
    scan_interval_s: float = Field(2.0, gt=0, description="takeover scan period")
    preview_method: str = Field("tikhonov", description="the fast preview method")
    read_count: int = Field(64, gt=0, description="frames read per session and XREADGROUP")
    torch_threads: int = Field(1, ge=0, description="torch intra-op threads per worker thread "
                                                    "(0: torch's default)")
    kernel_threads: int = Field(0, ge=0, description="threads of D2IP's fused CPU kernels "
                                                     "(0: tuned by timing)")
    compute_nice: int = Field(10, ge=0, le=19, description="niceness of the main-method "
                                                           "thread, below the previews")
    log_level: str = Field("info", description="debug, info, warning, error")

    @model_validator(mode="after")
    def _renew_before_expiry(self) -> WorkerConfig:
        if self.lease_renew_ms * 2 > self.lease_ms:
            raise ValueError("EITMON_LEASE_RENEW_MS must be at most half of EITMON_LEASE_MS")
        return self

    @property
    def checkpoints(self) -> Path:
        """The checkpoint folder."""
        return self.checkpoint_dir or cache_dir() / "checkpoints"
