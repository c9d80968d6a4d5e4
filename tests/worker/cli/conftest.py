"""Shared helpers for the CLI tests."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from typer.testing import CliRunner

from worker.cli.main import app


@pytest.fixture
def fails_cleanly() -> Callable[..., None]:
    """Run `eitmon ARGS` and check it exits 2 with each needle in its message, no traceback.

    Rich wraps error text into a box whose width follows the terminal, so the box is stripped
    and whitespace collapsed before searching."""

    def check(args: list[str], *needles: str) -> None:
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, result.output
        assert isinstance(result.exception, SystemExit)
        assert "Traceback" not in result.output
        flat = " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())
        for needle in needles:
            assert needle in flat, result.output

    return check
