"""The API's settings for a CLI command: loaded, or a one-line error and exit status 2."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from service.settings import Settings


def load_settings(command: str) -> Settings:
    """`service.settings.Settings()` from the environment; on a bad configuration print
    `eitmon COMMAND: reason` (never the values) and exit 2."""
    from pydantic import ValidationError

    from service.settings import Settings, describe_error

    try:
        return Settings()
    except (ValidationError, ValueError) as e:
        typer.echo(f"eitmon {command}: {describe_error(e)}", err=True)
        raise typer.Exit(2) from None
