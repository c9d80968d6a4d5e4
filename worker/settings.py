"""Settings of the reconstruction engine that every command shares (pydantic-settings, prefix
`EITMON_`): where built artefacts are cached, and whether D2IP uses its fused CPU kernels.

A leaf module (pydantic only), so that the engine packages can read it without importing the
worker runtime; the worker's settings (`worker.runtime.config.WorkerConfig`) include it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "eitmon"


class EngineSettings(BaseSettings):
    """The engine's settings from the environment."""

    model_config = SettingsConfigDict(env_prefix="EITMON_", extra="ignore")

    cache_dir: Path = Field(default_factory=default_cache_dir,
                            json_schema_extra={"shown_default": "`~/.cache/eitmon`"},
                            description="forward models, method operators, compiled kernels, "
                                        "demo recordings")
    fused: bool = Field(True, description="D2IP's fused CPU kernels (0: the channels-last "
                                          "torch path, which computes the same function)")

    @field_validator("cache_dir", mode="before")
    @classmethod
    def _empty_is_default(cls, value: Any) -> Any:
        return default_cache_dir() if value in ("", None) else value
