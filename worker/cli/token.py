"""`eitmon token create`: mint a bearer token for the API. Torch-free."""

from __future__ import annotations

from typing import Annotated

import typer

from worker.cli.settings import load_settings

app = typer.Typer(help="Bearer tokens (JWT, HS256) for the monitoring API.",
                  no_args_is_help=True)


@app.command("create")
def create(
    scope: Annotated[list[str], typer.Option(
        "--scope", help="frames:write, volumes:read or sessions:admin (repeatable)")],
    ttl: Annotated[int, typer.Option(min=1, help="lifetime in seconds")] = 3600,
    subject: Annotated[str, typer.Option(help="the token's sub claim (who holds it)")] = "cli",
) -> None:
    """Sign a token with the API's secret (EITMON_JWT_SECRET_FILE or EITMON_JWT_SECRET) and
    print it alone on the last line."""
    from service.auth import create_token

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
