"""How both processes describe a configuration error (the API's settings, the worker's)."""

from __future__ import annotations


def describe_error(exc: Exception) -> str:
    """A one-line message for a settings error that never echoes the input values."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        parts = []
        for err in errors(include_input=False, include_url=False):
            loc = ".".join(str(x) for x in err.get("loc", ()))
            msg = str(err.get("msg", "")).removeprefix("Value error, ")
            parts.append(f"{loc}: {msg}" if loc else msg)
        return "; ".join(parts)
    return str(exc)
