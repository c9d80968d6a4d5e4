"""One error shape for every rejection: `{"error": {"reason": "<why>", "detail": "..."}}`.

Details never echo request values (tokens, patient labels, voltages), only where and what.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException
from starlette.routing import Match

from service import metrics

log = logging.getLogger("eitmon.service")


class ApiError(HTTPException):
    """An HTTP error with a machine-readable reason."""

    def __init__(self, status: int, reason: str, detail: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(status_code=status, detail=detail, headers=headers)
        self.reason = reason


class ErrorDetail(BaseModel):
    reason: str = Field(description="machine-readable, e.g. wrong_length, non_finite")
    detail: str = Field(description="human-readable explanation")


class ErrorResponse(BaseModel):
    """The body of every 4xx/5xx answer."""

    error: ErrorDetail

    model_config = {"json_schema_extra": {"examples": [
        {"error": {"reason": "wrong_length",
                   "detail": "frames[0].voltages: expected 928 values, got 464"}}]}}


def error_body(reason: str, detail: str) -> dict[str, Any]:
    return {"error": {"reason": reason, "detail": detail}}


def error_example(reason: str, detail: str) -> dict[str, Any]:
    return {"model": ErrorResponse,
            "content": {"application/json": {"example": error_body(reason, detail)}}}


AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: error_example("invalid_token", "missing, expired or invalid bearer token"),
    403: error_example("insufficient_scope", "this endpoint requires the scope sessions:admin"),
}
SESSION_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: error_example("session_not_found", "no session 3f2c..."),
    409: {"model": ErrorResponse, "content": {"application/json": {"examples": {
        "closed": {"value": error_body("session_closed", "session 3f2c... is closed")},
        "failed": {"value": error_body(
            "session_failed", "session 3f2c... failed: the worker could not reconstruct it")},
    }}}},
}

REDIS_RESPONSES: dict[str, Any] = {
    "model": ErrorResponse, "headers": {"Retry-After": {"schema": {"type": "integer"},
                                                       "description": "seconds"}},
    "content": {"application/json": {"examples": {
        "unavailable": {"value": error_body("redis_unavailable",
                                            "the queue is unavailable; retry")},
        "full": {"value": error_body("redis_full", "the queue is full; retry later")}}}}}

BODY_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: error_example("invalid_json", "the body is not valid JSON"),
    413: error_example("body_too_large", "request bodies are limited to 4194304 bytes"),
}

# FastAPI's only own 400 is a body it could not parse (e.g. JSON nested past the recursion limit)
_STATUS_REASONS = {400: "invalid_json", 404: "not_found", 405: "method_not_allowed",
                   413: "body_too_large", 415: "unsupported_media_type"}


def validation_detail(exc: RequestValidationError) -> tuple[int, str, str]:
    """(status, reason, detail) for a request that failed FastAPI/pydantic validation."""
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return 400, "invalid_json", "the body is not valid JSON"
    parts = []
    for e in errors[:5]:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
        parts.append(f"{loc}: {e.get('msg', 'invalid')}" if loc else str(e.get("msg")))
    return 422, "invalid_request", "; ".join(parts) or "invalid request"


def allowed_methods(request: Request) -> list[str]:
    """Every documented method of the path requested (the router's own 405 names only the first
    route of the path it tried)."""
    methods: set[str] = set()
    for route in request.app.routes:
        if isinstance(route, APIRoute) and route.include_in_schema and \
                route.matches(request.scope)[0] is not Match.NONE:
            methods |= route.methods
    return sorted(methods - {"HEAD"})


def install_error_handlers(app: FastAPI) -> None:
    """Route every exception to the one error shape."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.reason, str(exc.detail)), status_code=exc.status_code,
                            headers=exc.headers)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        reason = _STATUS_REASONS.get(exc.status_code, f"http_{exc.status_code}")
        detail = "the body is not valid JSON" if reason == "invalid_json" else str(exc.detail)
        headers = exc.headers
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(request))}
        return JSONResponse(error_body(reason, detail), status_code=exc.status_code,
                            headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        status, reason, detail = validation_detail(exc)
        return JSONResponse(error_body(reason, detail), status_code=status)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled %s during %s %s", type(exc).__name__, request.method,
                  request.url.path)
        return JSONResponse(error_body("internal_error", "unexpected server error"),
                            status_code=500)

    @app.exception_handler(RedisConnectionError)
    @app.exception_handler(RedisTimeoutError)
    async def _redis_down(request: Request, exc: Exception) -> JSONResponse:
        log.warning("redis unavailable during %s %s: %s", request.method, request.url.path,
                    type(exc).__name__)
        return JSONResponse(error_body("redis_unavailable", "the queue is unavailable; retry"),
                            status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(OutOfMemoryError)
    async def _redis_full(request: Request, exc: Exception) -> JSONResponse:
        metrics.REDIS_FULL.inc()
        log.warning("redis refused a write (maxmemory) during %s %s", request.method,
                    request.url.path)
        return JSONResponse(error_body("redis_full", "the queue is full; retry later"),
                            status_code=503, headers={"Retry-After": "5"})
