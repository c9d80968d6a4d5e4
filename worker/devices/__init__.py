"""Reading device files: one reader per format, registered by name (`--format`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from worker.devices.carefusion import carefusion_header, read_carefusion_eit
from worker.devices.device_file import DeviceFile, DeviceFormatError
from worker.devices.draeger import MAGIC as DRAEGER_MAGIC
from worker.devices.draeger import read_draeger_eit
from worker.devices.goettingen import read_get
from worker.devices.swisstom import read_swisstom_eit, swisstom_version


def read_eit(path: Path) -> DeviceFile:
    """An `.eit` file of any of the three makers, recognised as EIDORS recognises them
    (`eidors_readdata.m`, `pre_proc_spec_fmt`): CareFusion's UTF-16 XML header, Dräger's
    '---Draeger EIT-Software' in the first 80 bytes, Swisstom's version word."""
    with Path(path).open("rb") as file:
        head = file.read(4096)
    if carefusion_header(head) is not None:
        return read_carefusion_eit(path)
    if DRAEGER_MAGIC in head[:80]:
        return read_draeger_eit(path)
    if swisstom_version(head) is not None:
        return read_swisstom_eit(path)
    raise DeviceFormatError(f"{Path(path).name}: not a Dräger, Swisstom or CareFusion .eit "
                            "file (no header of any of them)")


FORMATS: dict[str, Callable[[Path], DeviceFile]] = {
    "get": read_get,  # Göttingen Goe-MF II / Viasys / CareFusion `.get`
    "eit": read_eit,  # any of the three below, recognised by its header
    "draeger-eit": read_draeger_eit,  # Dräger PulmoVista 500 `.eit`
    "swisstom-eit": read_swisstom_eit,  # Swisstom BB2 / Pioneer (Sentec) `.eit`, LQ2/3, LQ4
    "carefusion-eit": read_carefusion_eit,  # CareFusion / Goe-MF II `.eit`
}


# Formats that hold reconstructed 32 x 32 pixel images, not electrode voltages (as the
# eitprocessing package reads them: eitprocessing/datahandling/loading/{draeger,sentec,timpel}.py):
# a recording needs voltages, so these are refused with the reason rather than imported.
PIXEL_FORMATS: dict[str, str] = {
    "draeger-bin": "Dräger PulmoVista .bin",
    "sentec-zri": "Sentec LuMon .zri",
    "timpel-txt": "Timpel Enlight .txt",
}


def read_device_file(path: str | Path, fmt: str) -> DeviceFile:
    """Read `path` with the reader registered as `fmt`; ValueError names the known formats."""
    if fmt in PIXEL_FORMATS:
        raise ValueError(f"{PIXEL_FORMATS[fmt]} files hold the device's reconstructed 32 x 32 "
                         "pixel images, not electrode voltages: they cannot become a "
                         "recording (the eitprocessing package reads them as images)")
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    return FORMATS[fmt](Path(path))


__all__ = ["FORMATS", "PIXEL_FORMATS", "DeviceFile", "DeviceFormatError", "read_device_file"]
