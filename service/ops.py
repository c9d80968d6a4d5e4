"""Operations endpoints: liveness, readiness (Redis PING) and Prometheus metrics.

`/metrics` is served on the API's port (`metrics_router`) unless `EITMON_METRICS_PORT` is set:
then only on that port (`serve_metrics`), which the network can keep apart from the API's."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest, start_http_server
from redis.exceptions import RedisError

from service.errors import error_body, error_example

router = APIRouter(tags=["operations"])
metrics_router = APIRouter(tags=["operations"])

READY_TIMEOUT_S = 2.0


@router.get("/healthz", summary="Liveness: the process answers",
            responses={200: {"content": {"application/json": {"example": {"status": "ok"}}}}})
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: Redis answers PING",
            responses={200: {"content": {"application/json": {"example": {"status": "ready"}}}},
                       503: error_example("redis_unavailable", "Redis did not answer PING")})
async def readyz(request: Request) -> Response:
    try:
        await asyncio.wait_for(request.app.state.redis.ping(), READY_TIMEOUT_S)
    except (RedisError, OSError, asyncio.TimeoutError):
        return JSONResponse(error_body("redis_unavailable", "Redis did not answer PING"),
                            status_code=503)
    return JSONResponse({"status": "ready"})


@metrics_router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {
                "example": "# TYPE eitmon_frames_accepted_total counter\n"
                           "eitmon_frames_accepted_total 1234.0\n"}}}})
async def prometheus_metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def serve_metrics(host: str, port: int) -> None:
    """Serve the same metrics on `host:port` from a daemon thread (prometheus-client's server)."""
    start_http_server(port, addr=host)
