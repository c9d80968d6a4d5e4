"""Göttingen Goe-MF II (Viasys / CareFusion) `.get` files, as EIDORS reads them ("GET"/"MCEIT").

Layout (EIDORS eidors/interface/eidors_readdata.m, checked against two real files, see
docs/real-data.md): no header; frames of 256 little-endian float32 values:
- [0, 208): 16 adjacent injections x 13 adjacent measurements, none on a driven electrode,
  each injection's measurements starting at the pair after its driven pair (EIDORS
  `rotate_meas`): injection d drives electrodes (d, d+1), its k-th value measures
  (d+2+k, d+3+k), mod 16;
- [208, 224): one current reading per injection (EIDORS scales it by 0.00512 to amperes);
- [224, 240): one drive-voltage reading per injection (EIDORS: x 12 to V rms);
- [240, 256): auxiliary input.
Files that measured only one of each reciprocal pair (104 values, the others exactly 0: value
39 is the first of them) are completed by reciprocity, as EIDORS does.

The frames are returned in EIDORS's `no_rotate_meas` order (measurement pairs from electrode 0
up), with the protocol EIDORS attaches to these files, `mk_stim_patterns(16, 1, [0, 1], [0, 1],
{'no_meas_current', 'no_rotate_meas'}, 1)`: its currents have the opposite sign of our
`adjacent` preset, which the values' sign (all positive) matches. Values are in device units
(not scaled): difference imaging only uses ratios.

Electrode placement (stated for the neonate recording, assumed for the device): electrode 1 at
the front of the chest, 5 on the patient's left, 9 on the back, 13 on the right: clockwise as
seen from the feet, the other way round from our geometries (anterior -> patient's right).
Device electrode i (0-based) is therefore model electrode (-i) mod 16: electrode 1 stays the
front one, the order is mirrored. The homogeneous-model check cannot see this (a left-right
symmetric thorax gives the same voltages either way); the images would be mirrored.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from service.contract.stim_patterns import mk_stim_patterns
from worker.devices.device_file import DeviceFile, DeviceFormatError, channel_index, pair_key

FRAME_VALUES = 256
N_ELECTRODES = 16
N_MEASUREMENTS = 208
CURRENT_SCALE = 0.00512  # EIDORS: current readings to amperes (not verified here)
PROTOCOL_ARGS = (N_ELECTRODES, 1, [0, 1], [0, 1])
PROTOCOL_DESCRIPTION = ("EIDORS mk_stim_patterns(16, 1, [0, 1], [0, 1], "
                        "{'no_meas_current', 'no_rotate_meas'}, 1)")
DEVICE = "Göttingen Goe-MF II (Viasys/CareFusion), 16 electrodes"
MODEL_ELECTRODE = [(-i) % N_ELECTRODES for i in range(N_ELECTRODES)]  # see the module doc


class GetFormatError(DeviceFormatError):
    """The file is not in the layout this reader knows."""


def _pair_keys(protocol: dict[str, Any]) -> list[tuple[tuple[int, ...], ...]]:
    return [pair_key(protocol, m) for m in protocol["measurements"]]


def _orders() -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """(protocol, file-to-protocol permutation, file index of each value's reciprocal)."""
    protocol = mk_stim_patterns(*PROTOCOL_ARGS, ["no_meas_current", "no_rotate_meas"])
    rotated_protocol = mk_stim_patterns(*PROTOCOL_ARGS, ["no_meas_current", "rotate_meas"])
    order = channel_index(rotated_protocol, protocol)
    rotated = _pair_keys(rotated_protocol)
    file_index = {key: k for k, key in enumerate(rotated)}
    reciprocal = np.array([file_index[(meas, drive)] for drive, meas in rotated])
    return protocol, order, reciprocal


def _stored_once() -> np.ndarray:
    """File positions a reciprocity-saving recording leaves at 0: injection d's k-th value
    when its measured pair wraps past electrode 15 (d + 2 + k >= 16)."""
    d, k = np.divmod(np.arange(N_MEASUREMENTS), N_MEASUREMENTS // N_ELECTRODES)
    return d + 2 + k >= N_ELECTRODES


def read_sidecar(path: Path) -> dict[str, str]:
    """`key = value` lines of the `.prl` file next to `path` (same stem, or the stem before
    its last '-'), or {}."""
    stems = [path.stem, path.stem.rsplit("-", 1)[0]]
    for stem in stems:
        prl = path.with_name(f"{stem}.prl")
        if prl.is_file():
            fields = {}
            for line in prl.read_text(errors="replace").splitlines():
                key, sep, value = line.partition("=")
                if sep:
                    fields[key.strip()] = value.strip()
            return {"file": prl.name, **fields}
    return {}


def _sidecar_rate(sidecar: dict[str, str]) -> float | None:
    match = re.match(r"([0-9.]+)", sidecar.get("Framerate", ""))
    return float(match.group(1)) if match else None


def read_get(path: str | Path) -> DeviceFile:
    """Read a Goe-MF II `.get` file (see the module doc)."""
    path = Path(path)
    raw = np.fromfile(path, dtype="<f4")
    if raw.size == 0 or raw.size % FRAME_VALUES:
        raise GetFormatError(f"{path}: {path.stat().st_size} bytes is not a whole number of "
                             f"{FRAME_VALUES}-value float32 frames")
    frames = raw.reshape(-1, FRAME_VALUES).astype(np.float64)
    if not np.all(np.isfinite(frames)):
        raise GetFormatError(f"{path}: NaN or Inf values: not a .get file")
    values = frames[:, :N_MEASUREMENTS].copy()
    protocol, order, reciprocal = _orders()
    zero = np.all(values == 0, axis=0)
    stored_once = bool(zero.any() and np.array_equal(zero, _stored_once()))
    if stored_once:
        values[:, zero] = values[:, reciprocal[zero]]
    sidecar = read_sidecar(path)
    currents = frames[:, N_MEASUREMENTS:N_MEASUREMENTS + N_ELECTRODES]
    details = {
        "file_frames": int(frames.shape[0]),
        "stored": "104 values, reciprocals filled in" if stored_once else "208 values",
        "injection_current_A": (CURRENT_SCALE * currents.mean(axis=0)).round(7).tolist(),
        "sidecar": sidecar,
    }
    return DeviceFile(format="get", device=DEVICE, voltages=values[:, order], protocol=protocol,
                      protocol_description=PROTOCOL_DESCRIPTION,
                      frame_rate=_sidecar_rate(sidecar), reciprocals_measured=not stored_once,
                      model_electrode=MODEL_ELECTRODE, details=details)
