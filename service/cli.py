"""The API's command line: `api` (serve it under uvicorn), `token create` and `token revoke`.
Torch-free.

Run it as `eitmon-service` (the API image's command) or `python -m service`; the full
`eitmon` command runs it for `eitmon api` and `eitmon token` (`worker.cli.api`).
"""

from __future__ import annotations

import logging
import logging.config
import time
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from service.settings import Settings

app = typer.Typer(help="eitmon monitoring API: serve it, mint and revoke its tokens.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
token_app = typer.Typer(help="Bearer tokens (JWT, HS256) for the monitoring API.",
                        no_args_is_help=True)
app.add_typer(token_app, name="token")
log = logging.getLogger("eitmon.service")


def load_settings(command: str, log_level: str = "info") -> Settings:
    """`Settings()` from the environment, with the API's logging configured; on a bad
    configuration print `eitmon COMMAND: reason` (never the values) and exit 2. Warns when
    the JWT secret comes from the environment variable rather than a file."""
    from pydantic import ValidationError

    from service.contract.errors import describe_error
    from service.logsafe import log_config
    from service.settings import Settings

    logging.config.dictConfig(log_config(log_level))
    try:
        settings = Settings()
    except (ValidationError, ValueError) as e:
        typer.echo(f"eitmon {command}: {describe_error(e)}", err=True)
        raise typer.Exit(2) from None
    if settings.secret_from_env:
        log.warning("the JWT secret comes from EITMON_JWT_SECRET, which every process that "
                    "can read this environment sees: prefer EITMON_JWT_SECRET_FILE (a mounted "
                    "secret)")
    return settings


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
    EITMON_DEMO=1 allows a random secret and prints a token for it. With EITMON_METRICS_PORT,
    /metrics is served on that port (same interface) instead of PORT.
    """
    settings = load_settings("api", log_level)
    if settings.secret_generated:
        from service.contract.tokens import SCOPES, create_token

        token = create_token(settings.secret, SCOPES, 12 * 3600, subject="demo")
        typer.echo("demo mode: random JWT secret for this process; a token with every scope, "
                   "valid 12 h:", err=True)
        typer.echo(token)

    import uvicorn

    from service.app import create_app
    from service.logsafe import log_config
    from service.ops import serve_metrics

    if settings.metrics_port is not None:
        serve_metrics(host, settings.metrics_port)
    uvicorn.run(create_app(settings), host=host, port=port, proxy_headers=True,
                forwarded_allow_ips=forwarded_allow_ips, log_config=log_config(log_level),
                ws_per_message_deflate=False)


@token_app.command("create")
def create_token_command(
    scope: Annotated[list[str], typer.Option(
        "--scope", help="frames:write, volumes:read or sessions:admin (repeatable)")],
    ttl: Annotated[int, typer.Option(
        min=1, help="lifetime in seconds, at most EITMON_TOKEN_MAX_TTL_S")] = 3600,
    subject: Annotated[str, typer.Option(help="the token's sub claim (who holds it)")] = "cli",
    session: Annotated[list[str] | None, typer.Option(
        "--session", help="bind the token to this session id (repeatable; a frames:write "
                          "token needs exactly one unless it holds sessions:admin)")] = None,
) -> None:
    """Sign a token with the API's secret (EITMON_JWT_SECRET_FILE or EITMON_JWT_SECRET) and
    print it alone on the last line; its id (jti, for `token revoke`) and expiry go to
    stderr."""
    from service.contract.tokens import create_token

    settings = load_settings("token")
    if settings.secret_generated:
        typer.echo("eitmon token: no JWT secret configured (demo mode would generate a "
                   "throw-away one); set EITMON_JWT_SECRET_FILE or EITMON_JWT_SECRET", err=True)
        raise typer.Exit(2)
    if ttl > settings.token_max_ttl_s:
        typer.echo(f"eitmon token: --ttl {ttl} exceeds the maximum lifetime of "
                   f"{settings.token_max_ttl_s} s (EITMON_TOKEN_MAX_TTL_S)", err=True)
        raise typer.Exit(2)
    try:
        token = create_token(settings.secret, scope, ttl, subject=subject, sessions=session)
    except ValueError as e:
        typer.echo(f"eitmon token: {e}", err=True)
        raise typer.Exit(2) from None
    import jwt

    claims = jwt.decode(token, options={"verify_signature": False})
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(claims["exp"]))
    typer.echo(f"jti {claims['jti']}, expires {expires}", err=True)
    typer.echo(token)


@token_app.command("revoke")
def revoke_token_command(
    jti: Annotated[str, typer.Argument(help="the token's id (its jti claim)")],
) -> None:
    """Put a token id on the revocation list in Redis (REDIS_URL): the API refuses the token
    from now on and closes the WebSockets opened with it within EITMON_REVOCATION_CHECK_S."""
    import redis

    from service.contract.keys import REVOKED_TOKENS

    settings = load_settings("token")
    if not 0 < len(jti) <= 128:
        typer.echo("eitmon token: a jti is 1 to 128 characters", err=True)
        raise typer.Exit(2)
    now = time.time()
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=5)
    try:
        with client.pipeline(transaction=True) as p:
            # kept until every token with this id has expired anyway, then pruned
            p.zadd(REVOKED_TOKENS, {jti: now + settings.token_max_ttl_s + 60})
            p.zremrangebyscore(REVOKED_TOKENS, "-inf", now)
            p.execute()
    except redis.RedisError as e:
        typer.echo(f"eitmon token: Redis unavailable ({type(e).__name__})", err=True)
        raise typer.Exit(1) from None
    finally:
        client.close()
    typer.echo(f"revoked {jti}", err=True)
