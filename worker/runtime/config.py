"""Worker settings from the environment (pydantic-settings, prefix `EITMON_`).

The fields are the one list of the worker's settings: `eitmon worker --help` (`settings_help`)
and the table in docs/worker.md (`settings_table`, checked by a test) are rendered from them.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import SettingsConfigDict

from worker.settings import EngineSettings


def default_worker_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class WorkerConfig(EngineSettings):
    """Everything `eitmon worker` reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="EITMON_", extra="ignore")

    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="Redis ≥ 6.2 or valkey, standalone (one XREADGROUP reads the streams of "
                    "all owned sessions, which Redis Cluster would refuse across slots)",
        validation_alias=AliasChoices("REDIS_URL", "EITMON_REDIS_URL", "redis_url"))
    worker_name: str = Field(default_factory=default_worker_name, min_length=1,
                             pattern=r"^[A-Za-z0-9._-]+$",
                             json_schema_extra={"shown_default": "`<hostname>-<pid>`"},
                             description="consumer name, lease owner and heartbeat key; unique "
                                         "per worker (Kubernetes: the pod name)")
    checkpoint_dir: Path | None = Field(None, json_schema_extra={
        "shown_default": "`<EITMON_CACHE_DIR>/checkpoints`"},
        description="session checkpoints, shared by all workers")
    device: Literal["cpu", "cuda", "auto"] = Field(
        "auto", description="the main method's device: `cpu`, `cuda`, or `auto` (cuda when "
                            "torch sees a GPU)")
    sessions_per_worker: int = Field(4, gt=0, description="most sessions owned at once (equal "
                                                          "to the autoscaler's target)")
    lease_ms: int = Field(10_000, ge=200, description="lease time to live")
    lease_renew_ms: int = Field(3_000, ge=50, description="lease renewal period (at most half "
                                                          "the lease)")
    checkpoint_every: int = Field(50, gt=0, description="frames between checkpoints")
    idle_evict_s: float = Field(300.0, gt=0, description="evict a session without entries for "
                                                         "this long")
    scan_interval_s: float = Field(2.0, gt=0, description="period of the takeover scan "
                                                          "and of the recovery of pending entries")
    preview_method: str = Field("tikhonov", description="the fast preview method")
    read_count: int = Field(64, gt=0, description="entries read per session and XREADGROUP")
    torch_threads: int = Field(1, ge=0, description="torch intra-op threads per worker thread "
                                                    "(0: torch's default)")
    kernel_threads: int = Field(0, ge=0, description="threads of D2IP's fused CPU kernels "
                                                     "(0: tuned by timing, 1 or every CPU the "
                                                     "worker may use)")
    compute_nice: int = Field(10, ge=0, le=19, description="niceness of the main-method "
                                                           "thread (0: none)")
    max_session_failures: int = Field(3, gt=0, description="failed attempts (setup, intake or "
                                                           "main method) after which a session "
                                                           "is marked `failed`")
    retry_backoff_s: float = Field(60.0, ge=0, description="a session that failed here is "
                                                           "not taken again by this worker for "
                                                           "this long (others may)")
    session_retention_s: int = Field(86_400, gt=0, description="keys of a failed session "
                                                               "expire after this long (as "
                                                               "the API's for a closed one)")
    stall_timeout_s: float = Field(300.0, gt=0, description="the compute thread may spend this "
                                                            "long on one step before the "
                                                            "heartbeat stops")
    build_timeout_s: float = Field(600.0, gt=0, description="a cold model build (in its own "
                                                            "process) that runs longer is "
                                                            "stopped and fails its session")
    build_memory_mb: int = Field(4096, ge=1024, description="address-space limit of the model "
                                                           "build process; a build that needs "
                                                           "more fails its session")
    heartbeat_ttl_s: float = Field(30.0, gt=0, description="the heartbeat key's time to live; "
                                                           "the liveness check fails once "
                                                           "it is missing or older")
    quality_window: int = Field(64, ge=0, description="frames of a session's live "
                                                      "data-quality report (bad electrodes "
                                                      "flagged and excluded; 0: off)")
    quality_every: int = Field(32, gt=0, description="frames between two live data-quality "
                                                     "reports of a session")
    quality_drift_s: float = Field(30.0, ge=0, description="seconds of frames (by timestamp) "
                                                           "the live drift check covers (0: "
                                                           "off)")
    log_level: str = Field("info", description="`debug`, `info`, `warning`, `error`")

    @model_validator(mode="after")
    def _periods(self) -> WorkerConfig:
        if self.lease_renew_ms * 2 > self.lease_ms:
            raise ValueError("EITMON_LEASE_RENEW_MS must be at most half of EITMON_LEASE_MS")
        if self.lease_renew_ms * 2 > self.heartbeat_ttl_s * 1000:
            raise ValueError("EITMON_LEASE_RENEW_MS (the heartbeat period) must be at most half "
                             "of EITMON_HEARTBEAT_TTL_S")
        return self

    @property
    def checkpoints(self) -> Path:
        """The checkpoint folder."""
        return self.checkpoint_dir or self.cache_dir / "checkpoints"


def variable(name: str, info: FieldInfo) -> str:
    """The environment variable of a settings field."""
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return f"EITMON_{name.upper()}"


def shown_default(info: FieldInfo) -> str:
    """A field's default as the docs show it."""
    extra = info.json_schema_extra
    if isinstance(extra, dict) and "shown_default" in extra:
        return str(extra["shown_default"])
    value: Any = info.default
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value}`" if isinstance(value, str) else str(value)


def settings_rows(settings: type[EngineSettings] = WorkerConfig) -> list[tuple[str, str, str]]:
    """(variable, default, meaning) for every field, in declaration order."""
    return [(variable(name, info), shown_default(info), info.description or "")
            for name, info in settings.model_fields.items()]


def settings_table(settings: type[EngineSettings] = WorkerConfig) -> str:
    """The Markdown table of docs/worker.md."""
    lines = ["| variable | default | meaning |", "| --- | --- | --- |"]
    lines += [f"| `{var}` | {default} | {meaning} |"
              for var, default, meaning in settings_rows(settings)]
    return "\n".join(lines) + "\n"


def settings_help(settings: type[EngineSettings] = WorkerConfig) -> str:
    """One line per variable, for `--help`."""
    return "\n".join(f"{var} (default {default.replace('`', '')}): {meaning.replace('`', '')}"
                     for var, default, meaning in settings_rows(settings))
