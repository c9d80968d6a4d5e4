"""Logging that cannot leak credentials: a filter that redacts bearer tokens (JWTs) from every
record, and the uvicorn logging config that installs it on every handler. Every line starts
with its UTC time (ISO 8601, milliseconds).

Patient labels are never passed to a logger in the first place; tokens could reach one through
a library (the WebSocket handshake headers and frame payloads that websockets logs at debug
level), hence the filter, which also blanks logged WebSocket frame payloads.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any

from uvicorn.logging import AccessFormatter, DefaultFormatter

# a JWT starts with the base64url of '{"': "eyJ"; the dots also swallow "..." elisions
JWT = re.compile(r"eyJ[A-Za-z0-9_.-]{8,}")
BEARER = re.compile(r"(?i)(bearer[ ,:]+)[A-Za-z0-9._~+/=-]{8,}")
# WebSocket frames logged at debug level: `TEXT '{"token": ...}' [252 bytes]`
WS_FRAME = re.compile(r"\b(TEXT|BINARY|CONT) .*(\[\d+ bytes[^\]]*\])")
REDACTED = "[redacted]"


def redact(text: str) -> str:
    text = WS_FRAME.sub(r"\1 " + REDACTED + r" \2", text)
    return BEARER.sub(r"\1" + REDACTED, JWT.sub(REDACTED, text))


class RedactFilter(logging.Filter):
    """Redact tokens from a record's message and arguments, keeping their structure (uvicorn's
    access formatter reads the args tuple)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_clean(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _clean(v) for k, v in record.args.items()}
        return True


def _clean(value: Any) -> Any:
    if isinstance(value, (int, float)) or value is None:
        return value
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    clean = redact(text)
    return value if clean == text else clean


class _UtcTime(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        """`2026-12-06T10:41:45.123Z`."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{stamp}.{int(record.msecs):03d}Z"


class TimestampedFormatter(_UtcTime, DefaultFormatter):
    """uvicorn's formatter, with UTC timestamps."""


class TimestampedAccessFormatter(_UtcTime, AccessFormatter):
    """uvicorn's access-log formatter, with UTC timestamps."""


class RateLimitedLog:
    """One log line per event kind at most every `interval_s`; the next line of that kind says
    how many were left out in between (the exact counts belong in metrics)."""

    def __init__(self, logger: logging.Logger, interval_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger, self.interval_s, self.clock = logger, interval_s, clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, event: str, msg: str, *args: Any) -> None:
        """Log `msg % args` as one line (no traceback) unless `event` was logged recently."""
        now = self.clock()
        last = self._last.get(event)
        if last is not None and now - last < self.interval_s:
            self._suppressed[event] = self._suppressed.get(event, 0) + 1
            return
        self._last[event] = now
        left_out = self._suppressed.pop(event, 0)
        suffix = f" ({left_out} more like it left out)" if left_out else ""
        self.logger.warning(msg + suffix, *args)


def log_config(level: str = "info") -> dict[str, Any]:
    """uvicorn's default logging config plus the redaction filter and eitmon's own logger."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": "service.logsafe.RedactFilter"}},
        "formatters": {
            "default": {"()": "service.logsafe.TimestampedFormatter",
                        "fmt": "%(asctime)s %(levelprefix)s %(name)s: %(message)s",
                        "use_colors": None},
            "access": {"()": "service.logsafe.TimestampedAccessFormatter",
                       "fmt": '%(asctime)s %(levelprefix)s %(client_addr)s - "%(request_line)s" '
                              "%(status_code)s"},
        },
        "handlers": {
            "default": {"formatter": "default", "class": "logging.StreamHandler",
                        "stream": "ext://sys.stderr", "filters": ["redact"]},
            "access": {"formatter": "access", "class": "logging.StreamHandler",
                       "stream": "ext://sys.stdout", "filters": ["redact"]},
        },
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": level.upper(), "propagate": False},
            "uvicorn.error": {"level": level.upper()},
            "uvicorn.access": {"handlers": ["access"], "level": level.upper(),
                               "propagate": False},
            "eitmon": {"handlers": ["default"], "level": level.upper(), "propagate": False},
            "websockets": {"handlers": ["default"], "level": level.upper(),
                           "propagate": False},
        },
    }
