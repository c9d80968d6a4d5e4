"""Reading device files: one reader per format, registered by name (`--format`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from worker.devices.device_file import DeviceFile
from worker.devices.goettingen import read_get

FORMATS: dict[str, Callable[[Path], DeviceFile]] = {
    "get": read_get,  # Göttingen Goe-MF II / Viasys / CareFusion `.get`
}


def read_device_file(path: str | Path, fmt: str) -> DeviceFile:
    """Read `path` with the reader registered as `fmt`; ValueError names the known formats."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    return FORMATS[fmt](Path(path))


__all__ = ["FORMATS", "DeviceFile", "read_device_file"]
