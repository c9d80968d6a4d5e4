"""The worker's settings: one list, rendered into `eitmon worker --help` and docs/worker.md."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from worker.runtime.config import WorkerConfig, settings_rows, settings_table

DOCS = Path(__file__).parents[3] / "docs" / "worker.md"


def test_docs_table_is_the_generated_one() -> None:
    assert settings_table() in DOCS.read_text(), (
        "docs/worker.md's settings table is out of date: paste "
        "`python -c 'from worker.runtime.config import settings_table as t; print(t())'`")


def test_help_lists_every_setting() -> None:
    from worker.cli.main import app

    result = CliRunner().invoke(app, ["worker", "--help"], terminal_width=200)
    assert result.exit_code == 0
    variables = [variable for variable, _, _ in settings_rows()]
    assert {"EITMON_KERNEL_THREADS", "EITMON_FUSED", "EITMON_CACHE_DIR",
            "REDIS_URL"} <= set(variables)
    for variable in variables:
        assert variable in result.output, variable


def test_kernel_threads_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    assert WorkerConfig().kernel_threads == 0  # tuned by timing
    monkeypatch.setenv("EITMON_KERNEL_THREADS", "3")
    assert WorkerConfig().kernel_threads == 3
    monkeypatch.setenv("EITMON_KERNEL_THREADS", "-1")
    with pytest.raises(ValidationError):
        WorkerConfig()


def test_engine_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EITMON_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("EITMON_FUSED", "0")
    cfg = WorkerConfig()
    assert (cfg.cache_dir, cfg.fused, cfg.checkpoints) == (tmp_path, False,
                                                            tmp_path / "checkpoints")
    monkeypatch.setenv("EITMON_CACHE_DIR", "")
    assert WorkerConfig().cache_dir == Path.home() / ".cache" / "eitmon"
