"""`create_app`: the FastAPI application of the monitoring service (torch-free)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from redis.asyncio import Redis

from service import frames, ops, parameters, sessions, stream_ws, viewer
from service.errors import install_error_handlers
from service.hub import ResultHub
from service.idle import expire_idle_sessions
from service.limits import BodyLimitMiddleware
from service.settings import Settings

DESCRIPTION = """Bedside 3D lung EIT monitor: queue voltage frames, watch reconstructed volumes.

Bearer tokens (JWT, HS256) carry the scopes `frames:write`, `volumes:read`, `sessions:admin`,
and may be bound to sessions (a `frames:write` token must be: one session).
Live volumes and per-breath parameters: `WS /v1/sessions/{id}/stream` (see
docs/service-api.md); authenticate with the
subprotocols `["bearer", "<token>"]` or a first message `{"token": "<token>"}`.
Every error answers `{"error": {"reason": "...", "detail": "..."}}`."""


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app; Redis is connected lazily, so the process starts (and /readyz says 503) even
    while Redis is down."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = Redis.from_url(settings.redis_url, socket_connect_timeout=2.0,
                               health_check_interval=30)
        app.state.redis = redis
        app.state.hub = ResultHub(redis, settings.viewer_queue)
        expiry = (asyncio.create_task(expire_idle_sessions(redis, settings))
                  if settings.idle_timeout_s else None)
        try:
            yield
        finally:
            if expiry is not None:
                expiry.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await expiry
            await app.state.hub.close()
            await redis.aclose()

    # /docs and /redoc load Swagger UI and ReDoc from the package, never from a CDN
    # (and Swagger UI's online spec validator is off)
    app = FastAPIOffline(title="eitmon monitoring API", version="1", description=DESCRIPTION,
                         lifespan=lifespan, swagger_ui_parameters={"validatorUrl": None})
    app.state.settings = settings
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    install_error_handlers(app)
    for module in (ops, sessions, frames, parameters, stream_ws, viewer):
        app.include_router(module.router)
    if settings.metrics_port is None:
        app.include_router(ops.metrics_router)
    return app
