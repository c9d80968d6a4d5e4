"""`eitmon worker`: the reconstruction worker (see docs/worker.md)."""

from __future__ import annotations

import typer

from worker.runtime.config import settings_help


def worker(check_liveness: bool = typer.Option(
        False, "--check-liveness",
        help="Exit 0 when this worker's heartbeat is fresh, 1 when it is missing or stale "
             "(the container's liveness probe), instead of running a worker.")) -> None:
    """Reconstruct the frames of the sessions this worker claims, until SIGTERM."""
    if check_liveness:
        from worker.runtime.main import check_liveness as check

        raise typer.Exit(check())
    from worker.runtime.main import run

    run()


worker.__doc__ = f"""{worker.__doc__}

Configured by the environment (docs/worker.md):

{settings_help()}
"""
