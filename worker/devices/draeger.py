"""Dräger PulmoVista 500 `.eit` files (raw transimpedances), `--format draeger-eit`.

Layout, as read from public sources (no Dräger documentation is public):
- EIDORS `eidors/interface/eidors_readdata.m` (eidors3d/eidors-readonly), subfunctions
  `read_draeger_header` and `read_draeger_file`: the format version in the first little-endian
  int32 (0x1F = 31, 0x20 = 32, 0x33 = 51); a little-endian uint32 L at byte 4; the frames' data
  blocks start at byte L + 16 and follow each other every SPC bytes (5495 for version 51, 5200
  for 32, 4112 for 31); each block opens with 600 little-endian float64 of which values
  [0, 208) and [322, 530) are two sets A and B of the 16 x 13 adjacent measurements (EIDORS
  `rotate_meas`, no measurement on a driven electrode), combined as 0.00098242 A - 0.00019607 B
  (EIDORS: "estimated AA: 2016-04-07", fitted against Dräger's own converter; not a documented
  calibration); the frame rate in the text header line `Framerate [Hz]:`; the protocol
  `mk_stim_patterns(16, 1, [0, 1], [0, 1], {'rotate_meas', 'no_meas_current'}, 0.005)`.
- A published hex dump of a real version-51 file (Kernel236/fastEIT,
  `docs/reverse_eng/eit_format.ipynb`): the text header runs from byte 12 to L, where the
  8 bytes `**\\r\\n\\r\\n\\r\\n` end it, and each 5495-byte frame starts at L + 8 + k x 5495 with
  a float64 time stamp (fraction of the day: 0.75757 for a header time of 18:10:54), 8 bytes
  before EIDORS's block. Decoded on EIDORS's offset, the dump's values 0 and 207 are large
  (89.1, 74.9: next to the drive), 208-223 small and 224-226 (as far as the dump goes) 9.1,
  near the header's `Amplitude [uA]: 9100` (the currents in mA). fastEIT itself places the
  208 values one float64 later; its own dump contradicts that (docs/real-data.md), so EIDORS's
  offset is used. pyEIT (`pyeit/io/daeger_eit.py`) reads yet another offset (L + 8, 16-bit L)
  and stride 3200 for
  version 32: not used.

What this reader returns: the combined values in the file's (rotated) channel order with
EIDORS's protocol (its currents have the opposite sign of our `adjacent` preset: the model
check at import refuses a flipped sign); frame times from the time stamps (version 51) when they
increase, else from the header's frame rate. The electrode placement on the patient is not in
any public source we read, so device electrode i is model electrode i. Version 31 is refused:
its 4112-byte stride is shorter than the 4808 bytes EIDORS reads per frame, so EIDORS's layout
cannot be right for it.

Verified only against synthetic files written from this layout (tests/worker/devices/
test_eit_formats.py); NOT against a real device file.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from service.contract.stim_patterns import mk_stim_patterns
from worker.devices.device_file import ByteReader, DeviceFile, DeviceFormatError

DEVICE = "Dräger PulmoVista 500, 16 electrodes"
MAGIC = b"---Draeger EIT-Software"
SEPARATOR = b"**\r\n\r\n\r\n"
FRAME_BYTES = {51: 5495, 32: 5200}  # EIDORS SPC; version 31 refused (see the module doc)
BLOCK_VALUES = 600
SET_A, SET_B = 0, 322  # first value of each 208-value set in the block (EIDORS)
N_MEASUREMENTS = 208
COMBINE = (0.00098242, 0.00019607)  # EIDORS: v = COMBINE[0] A - COMBINE[1] B (empirical)
SECONDS_PER_DAY = 86400.0
PROTOCOL_DESCRIPTION = ("EIDORS mk_stim_patterns(16, 1, [0, 1], [0, 1], "
                        "{'rotate_meas', 'no_meas_current'}, 1)")


def header_fields(text: str) -> dict[str, str]:
    """`key: value` lines of the text header."""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip():
            fields[key.strip()] = value.strip()
    return fields


def _frame_times(stamps: np.ndarray) -> np.ndarray | None:
    """Seconds from the first frame, from fractions of the day (one midnight wrap allowed);
    None when they do not increase strictly or are not fractions of a day."""
    if stamps.size == 0 or not np.all((stamps >= 0) & (stamps < 1)):
        return None
    days = np.concatenate([[0.0], np.cumsum(np.diff(stamps) < -0.5)])
    seconds = (stamps + days - stamps[0]) * SECONDS_PER_DAY
    return seconds if np.all(np.diff(seconds) > 0) else None


def read_draeger_eit(path: str | Path) -> DeviceFile:
    """Read a PulmoVista 500 `.eit` file (see the module doc)."""
    path = Path(path)
    data = path.read_bytes()
    reader = ByteReader(data, path.name)
    version = int(reader.scalar("i4", "the format version"))
    header_end = int(reader.scalar("u4", "the header length"))
    if MAGIC not in data[:4096]:
        raise DeviceFormatError(f"{path.name}: no '---Draeger EIT-Software' header: not a "
                                "Dräger .eit file")
    if not 12 <= header_end <= len(data) - len(SEPARATOR):
        raise DeviceFormatError(f"{path.name}: truncated: the header ends at byte "
                                f"{header_end}, the file has {len(data)} bytes")
    if version not in FRAME_BYTES:
        raise DeviceFormatError(f"{path.name}: Dräger .eit format version {version} is not "
                                f"supported (known: {', '.join(map(str, FRAME_BYTES))})")
    text = data[12:header_end].decode("latin-1")
    fields = header_fields(text)
    if data[header_end:header_end + len(SEPARATOR)] != SEPARATOR:
        raise DeviceFormatError(f"{path.name}: the header does not end with '**' + line breaks "
                                f"at byte {header_end}: not a Dräger .eit file, or damaged")
    stride = FRAME_BYTES[version]
    first = header_end + len(SEPARATOR)
    body = len(data) - first
    n_frames, rest = divmod(body, stride)
    if n_frames == 0 or rest:
        raise DeviceFormatError(f"{path.name}: {body} bytes after the header is not a whole "
                                f"number of {stride}-byte frames (version {version}): "
                                "truncated or damaged")
    frames = np.frombuffer(data, dtype=np.uint8, count=n_frames * stride,
                           offset=first).reshape(n_frames, stride)
    stamps = frames[:, :8].copy().view("<f8")[:, 0]
    block = frames[:, 8:8 + 8 * BLOCK_VALUES].copy().view("<f8")
    if not np.all(np.isfinite(block[:, SET_A:SET_A + N_MEASUREMENTS])) or not np.all(
            np.isfinite(block[:, SET_B:SET_B + N_MEASUREMENTS])):
        raise DeviceFormatError(f"{path.name}: NaN or Inf measurements: damaged file")
    voltages = (COMBINE[0] * block[:, SET_A:SET_A + N_MEASUREMENTS]
                - COMBINE[1] * block[:, SET_B:SET_B + N_MEASUREMENTS])
    match = re.match(r"\s*([0-9.]+)", fields.get("Framerate [Hz]", ""))
    rate = float(match.group(1)) if match and float(match.group(1)) > 0 else None
    times = _frame_times(stamps) if version == 51 else None
    protocol = mk_stim_patterns(16, 1, [0, 1], [0, 1], ["rotate_meas", "no_meas_current"])
    details = {
        "file_frames": n_frames,
        "stored": f"Dräger .eit version {version}, {stride}-byte frames",
        "header": {key: fields[key] for key in ("Date", "Time", "Format", "Framerate [Hz]",
                                               "Frequency [kHz]", "Amplitude [uA]")
                   if key in fields},
        "frame_times_from": "time stamps" if times is not None else "header frame rate",
        "combination": f"{COMBINE[0]} A - {COMBINE[1]} B (EIDORS, empirical)",
    }
    return DeviceFile(format="draeger-eit", device=DEVICE, voltages=voltages, protocol=protocol,
                      protocol_description=PROTOCOL_DESCRIPTION, frame_rate=rate,
                      reciprocals_measured=True, details=details, frame_times=times)
