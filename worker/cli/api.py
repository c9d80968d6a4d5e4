"""`eitmon api`: run the monitoring API (FastAPI under uvicorn). Torch-free."""

from __future__ import annotations

from typing import Annotated

import typer

from worker.cli.settings import load_settings


def api(
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error")] = "info",
    forwarded_allow_ips: Annotated[str | None, typer.Option(
        help="proxies whose X-Forwarded-* headers are trusted (uvicorn's default: "
             "$FORWARDED_ALLOW_IPS or 127.0.0.1)")] = None,
) -> None:
    """Serve the monitoring API (HTTP and WebSocket).

    Configure it with REDIS_URL and EITMON_JWT_SECRET_FILE (or EITMON_JWT_SECRET);
    EITMON_DEMO=1 allows a random secret and prints a token for it.
    """
    settings = load_settings("api")
    if settings.secret_generated:
        from service.auth import SCOPES, create_token

        token = create_token(settings.secret, SCOPES, 12 * 3600, subject="demo")
        typer.echo("demo mode: random JWT secret for this process; a token with every scope, "
                   "valid 12 h:", err=True)
        typer.echo(token)

    import uvicorn

    from service.app import create_app
    from service.logsafe import log_config

    uvicorn.run(create_app(settings), host=host, port=port, proxy_headers=True,
                forwarded_allow_ips=forwarded_allow_ips, log_config=log_config(log_level),
                ws_per_message_deflate=False)
