"""The API's command line: `api` (serve it under uvicorn) and `token create`. Torch-free.

Run it as `eitmon-service` (the API image's command) or `python -m service`; the full
`eitmon` command runs it for `eitmon api` and `eitmon token` (`worker.cli.api`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from service.settings import Settings

app = typer.Typer(help="eitmon monitoring API: serve it, mint its tokens.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
token_app = typer.Typer(help="Bearer tokens (JWT, HS256) for the monitoring API.",
                        no_args_is_help=True)
app.add_typer(token_app, name="token")


def load_settings(command: str) -> Settings:
    """`Settings()` from the environment; on a bad configuration print `eitmon COMMAND:
    reason` (never the values) and exit 2."""
    from pydantic import ValidationError

    from service.contract.errors import describe_error
    from service.settings import Settings

    try:
        return Settings()
    except (ValidationError, ValueError) as e:
        typer.echo(f"eitmon {command}: {describe_error(e)}", err=True)
        raise typer.Exit(2) from None


@app.command("api")
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
        from service.contract.tokens import SCOPES, create_token

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


@token_app.command("create")
def create_token_command(
    scope: Annotated[list[str], typer.Option(
        "--scope", help="frames:write, volumes:read or sessions:admin (repeatable)")],
    ttl: Annotated[int, typer.Option(min=1, help="lifetime in seconds")] = 3600,
    subject: Annotated[str, typer.Option(help="the token's sub claim (who holds it)")] = "cli",
) -> None:
    """Sign a token with the API's secret (EITMON_JWT_SECRET_FILE or EITMON_JWT_SECRET) and
    print it alone on the last line."""
    from service.contract.tokens import create_token

    settings = load_settings("token")
    if settings.secret_generated:
        typer.echo("eitmon token: no JWT secret configured (demo mode would generate a "
                   "throw-away one); set EITMON_JWT_SECRET_FILE or EITMON_JWT_SECRET", err=True)
        raise typer.Exit(2)
    try:
        token = create_token(settings.secret, scope, ttl, subject=subject)
    except ValueError as e:
        typer.echo(f"eitmon token: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(token)
