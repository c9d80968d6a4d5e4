"""A device file to our recording format (worker/recording.py), with provenance, the
homogeneous-model check and the data-quality report. `eitmon import` is its command line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from service.contract.geometry import resolve_geometry
from service.contract.grid import resolve_grid
from service.contract.protocol import resolve_protocol
from service.contract.stim_patterns import protocol_sha256, renumber
from worker.devices import read_device_file
from worker.devices.consistency import ProtocolCheck, check_protocol
from worker.devices.device_file import DeviceFile
from worker.devices.known_recordings import file_hashes, known_recording
from worker.devices.quality import QualityReport, quality_report
from worker.recording import Recording, RecordingError, protocol_measurements
from worker.reference import reference_frames

DEFAULT_GEOMETRY = "thorax-1x16"


@dataclass
class Imported:
    """An imported recording, the file it came from, and what the checks found."""

    recording: Recording
    device_file: DeviceFile
    check: ProtocolCheck | None
    quality: QualityReport


def _provenance(path: Path, device_file: DeviceFile, attribution: str | None,
                rate_source: str) -> dict[str, Any]:
    sha256, first_frame_sha256 = file_hashes(path)
    known = known_recording(first_frame_sha256)
    if attribution is None and known is not None:
        attribution = known["attribution"]
    return {"file": path.name, "format": device_file.format, "device": device_file.device,
            "sha256": sha256, "first_frame_sha256": first_frame_sha256,
            "known_as": known["name"] if known else None, "attribution": attribution,
            "frame_rate_from": rate_source, **device_file.details}


def _frame_times(path: Path, device_file: DeviceFile, rate: float | None
                 ) -> tuple[np.ndarray, float, str]:
    """(frame times in s, frame rate, where they come from): `--rate` first, then the file's
    time stamps, then the frame rate it states."""
    n_frames = device_file.n_frames
    if rate is not None:
        if rate <= 0:
            raise ValueError(f"--rate: must be positive, got {rate}")
        return np.arange(n_frames) / rate, rate, "--rate"
    if device_file.frame_times is not None:
        times = np.asarray(device_file.frame_times, dtype=np.float64)
        if times.shape != (n_frames,) or np.any(np.diff(times) <= 0):
            raise ValueError(f"{path.name}: the file's time stamps do not increase; give --rate")
        stated = device_file.frame_rate
        rate = stated if stated else (float(1 / np.median(np.diff(times))) if n_frames > 1
                                      else None)
        if rate is None:
            raise ValueError(f"{path.name}: one frame and no frame rate; give --rate")
        return times, rate, "file time stamps"
    if device_file.frame_rate is not None:
        return np.arange(n_frames) / device_file.frame_rate, device_file.frame_rate, "file"
    raise ValueError(f"{path.name}: the file states no frame rate; give --rate")


def default_geometry(device_file: DeviceFile) -> str:
    """The single-ring thorax with the file's electrode count (16 or 32), else thorax-1x16."""
    return {32: "thorax-1x32"}.get(device_file.n_electrodes, DEFAULT_GEOMETRY)


def read_recording(path: str | Path, fmt: str, *, rate: float | None = None,
                   reference: str = "mean", geometry: Any = None, grid: Any = None,
                   attribution: str | None = None, electrodes: str = "device"
                   ) -> tuple[Recording, DeviceFile]:
    """The device file as a recording (no model built); ValueError says what is wrong.

    geometry: None picks `default_geometry` (a single ring with the file's electrode count).
    electrodes: "device" places the device's electrodes where the format says they sit
    (`DeviceFile.model_electrode`), "as-numbered" puts device electrode i on model electrode i.
    """
    path = Path(path)
    device_file = read_device_file(path, fmt)
    if geometry is None:
        geometry = default_geometry(device_file)
    frame_times, rate, rate_source = _frame_times(path, device_file, rate)
    chosen = reference_frames(reference, frame_times)
    protocol = device_file.protocol
    description = device_file.protocol_description
    if electrodes not in ("device", "as-numbered"):
        raise ValueError(f"--electrodes: expected device or as-numbered, got {electrodes!r}")
    if electrodes == "device" and device_file.model_electrode is not None:
        if not isinstance(protocol, dict):
            raise ValueError("a preset protocol cannot be renumbered")
        protocol = renumber(protocol, device_file.model_electrode)
        description += "; renumbered: device electrode i is model electrode model_electrode[i]"
    meta: dict[str, Any] = {
        "geometry": geometry, "protocol": protocol, "grid": list(resolve_grid(grid).shape),
        "protocol_description": description,
        "reference": {"spec": reference, "frames": [int(chosen[0]), int(chosen[-1])],
                      "count": int(chosen.size)},
        "frame_rate": rate,
        "model_electrode": (device_file.model_electrode if electrodes == "device" else None),
        "source": _provenance(path, device_file, attribution, rate_source),
    }
    if isinstance(protocol, dict):
        meta["protocol_sha256"] = protocol_sha256(protocol)
    expected = protocol_measurements(meta)  # before any model is built
    if expected != device_file.voltages.shape[1]:
        raise RecordingError(f"{path.name}: {device_file.voltages.shape[1]} measurements per "
                             f"frame, the protocol has {expected}")
    recording = Recording(voltages=device_file.voltages,
                          reference=device_file.voltages[chosen].mean(axis=0),
                          frame_times=frame_times, meta=meta)
    return recording, device_file


def model_check(recording: Recording, progress: bool = False) -> ProtocolCheck:
    """The homogeneous-model check of a recording (builds or loads its forward model)."""
    from worker.forward import load_model

    meta = recording.meta
    model = load_model(geometry=meta["geometry"], protocol=meta["protocol"], grid=meta["grid"],
                       progress=progress)
    return check_protocol(recording.reference, model.reference_voltages,
                          model.protocol.meas_injection)


def import_recording(path: str | Path, fmt: str, *, check: bool = True, progress: bool = False,
                     **options: Any) -> Imported:
    """Read, check against the model (unless `check` is False) and report; the recording's
    meta carries `protocol_check` and `quality`. Raises nothing on a refused check: the caller
    decides (see `Imported.check.verdict`)."""
    recording, device_file = read_recording(path, fmt, **options)
    result = model_check(recording, progress=progress) if check else None
    meta = recording.meta
    n_electrodes = resolve_geometry(meta["geometry"]).electrodes.count
    protocol = resolve_protocol(device_file.protocol).build(n_electrodes)  # device numbering
    quality = quality_report(recording.voltages, protocol.currents, protocol.meas_injection,
                             protocol.meas_weights, device_file.reciprocals_measured,
                             None if result is None else result.channel_ratio,
                             frame_times=recording.frame_times)
    meta = {**meta, "protocol_check": None if result is None else result.to_dict(),
            "quality": quality.to_dict()}
    recording = Recording(voltages=recording.voltages, reference=recording.reference,
                          frame_times=recording.frame_times, meta=meta)
    return Imported(recording=recording, device_file=device_file, check=result,
                    quality=quality)
