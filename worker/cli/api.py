"""`eitmon api` and `eitmon token`: the API's commands, run by the service's own command line.

The worker imports nothing of the service but its contract, so these commands hand the process
over to `python -m service` (`service.cli`, also installed as `eitmon-service`) with their
arguments unchanged: `eitmon api --port 8000` is `eitmon-service api --port 8000`.
"""

from __future__ import annotations

import os
import sys

import typer

PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True,
                "help_option_names": []}


def _run_service(command: str, args: list[str]) -> None:
    """Replace this process with the service's command line (signals and exit status are
    then the service's own)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "service", command, *args])


def api(ctx: typer.Context) -> None:
    """Serve the monitoring API (HTTP and WebSocket); `eitmon api --help` lists the options."""
    _run_service("api", ctx.args)


def token(ctx: typer.Context) -> None:
    """Bearer tokens for the API: `eitmon token create --scope ...` (see `--help`)."""
    _run_service("token", ctx.args)
