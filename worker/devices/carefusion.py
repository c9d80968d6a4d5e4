"""CareFusion / Göttingen Goe-MF II `.eit` files (2010+), `--format carefusion-eit`.

Layout, from EIDORS `eidors/interface/eidors_readdata.m` (eidors3d/eidors-readonly),
subfunctions `is_eit_file_a_carefusion_file` and `carefusion_eit_readdata` (no CareFusion
documentation is public):
- a UTF-16 little-endian XML header: the bytes FF FE, then text holding
  `<?xml version="1.0" ?>`, `<EIT_File>` and `<Header>N bytes</Header>` (EIDORS looks in the
  first 180 bytes): the binary part starts at byte N;
- then records of 6 little-endian int32 (type, waveform channel, sequence number, size in
  bytes, count, one more) and a payload: type 3 is one EIT frame of 256 float32 (its sequence
  number, from 0, is the frame's); type 7 an image of 912 words; types 8 (waveforms), 10 and
  others size / 4 x count words;
- values [47, 255) of the 256 are the 16 x 13 adjacent measurements in EIDORS's `rotate_meas`
  order without a driven electrode; EIDORS attaches `mk_stim_patterns(16, 1, [0, 1], [0, 1],
  {'no_meas_current', 'rotate_meas'}, 0.005)`. What values 0-46 and 255 hold is not known.

What this reader returns: those 208 values per frame in the file's channel order with that
protocol, frames in sequence-number order (a repeated or missing sequence number is refused:
the frame times would be wrong). The header's frame rate is not in the layout EIDORS reads:
give `--rate`. The XML header is kept in the details (the first 2000 characters) so that a
user can look for it there. The electrode placement is not in any public source we read:
device electrode i is model electrode i (the `.get` reader's mirrored placement was stated for
one recording, not for this format).

Verified only against synthetic files written from this layout (tests/worker/devices/
test_eit_formats.py); NOT against a real device file.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from service.contract.stim_patterns import mk_stim_patterns
from worker.devices.device_file import ByteReader, DeviceFile, DeviceFormatError

DEVICE = "CareFusion / Göttingen Goe-MF II (.eit), 16 electrodes"
BOM = b"\xff\xfe"
FRAME_VALUES = 256
FIRST_MEASUREMENT = 47
N_MEASUREMENTS = 208
IMAGE_WORDS = 912
RECORD_HEAD = 6
TYPE_FRAME, TYPE_IMAGE = 3, 7
HEADER_SEARCH_BYTES = 4096
PROTOCOL_DESCRIPTION = ("EIDORS mk_stim_patterns(16, 1, [0, 1], [0, 1], "
                        "{'no_meas_current', 'rotate_meas'}, 1)")


def carefusion_header(data: bytes) -> str | None:
    """The decoded start of the UTF-16 XML header when the file opens like a CareFusion one."""
    if not data.startswith(BOM):
        return None
    text = data[2:HEADER_SEARCH_BYTES + 2].decode("utf-16-le", errors="replace")
    if '<?xml version="1.0" ?>' in text[:40] and "<EIT_File>" in text[:40]:
        return text
    return None


def read_carefusion_eit(path: str | Path) -> DeviceFile:
    """Read a CareFusion / Goe-MF II `.eit` file (see the module doc)."""
    path = Path(path)
    data = path.read_bytes()
    text = carefusion_header(data)
    if text is None:
        raise DeviceFormatError(f"{path.name}: no UTF-16 '<?xml version=\"1.0\" ?>' + "
                                "'<EIT_File>' header: not a CareFusion .eit file")
    found = re.findall(r"<Header>(\d+) bytes</Header>", text)
    if len(found) != 1:
        raise DeviceFormatError(f"{path.name}: no single '<Header>N bytes</Header>' in the "
                                "XML header")
    header = int(found[0])
    reader = ByteReader(data, path.name)
    reader.seek(header, f"the binary part (header {header} bytes)")
    frames: dict[int, np.ndarray] = {}
    counts: dict[int, int] = {}
    while reader.remaining() > 0:
        start = reader.pos
        kind, _, sequence, size, count, _ = (
            int(v) for v in reader.array("i4", RECORD_HEAD, f"the record at byte {start}"))
        counts[kind] = counts.get(kind, 0) + 1
        if kind == TYPE_FRAME:
            values = reader.array("f4", FRAME_VALUES, f"the EIT frame at byte {start}")
            if sequence in frames:
                raise DeviceFormatError(f"{path.name}: frame sequence number {sequence} "
                                        f"appears twice (again at byte {start})")
            frames[sequence] = values[FIRST_MEASUREMENT:FIRST_MEASUREMENT + N_MEASUREMENTS]
            continue
        words = IMAGE_WORDS if kind == TYPE_IMAGE else size * count / 4
        if words < 0 or words != int(words):
            raise DeviceFormatError(f"{path.name}: record of type {kind} at byte {start} "
                                    f"has size {size} x count {count}, not whole words")
        reader.take(4 * int(words), f"the type-{kind} record at byte {start}")
    if not frames:
        raise DeviceFormatError(f"{path.name}: no EIT frame (record type 3) in the file")
    order = sorted(frames)
    missing = sorted(set(range(order[0], order[-1] + 1)) - set(order))
    if missing:
        raise DeviceFormatError(f"{path.name}: {len(missing)} frames missing (sequence "
                                f"number {missing[0]} first): the frame times would be wrong")
    voltages = np.stack([frames[k] for k in order]).astype(np.float64)
    if not np.all(np.isfinite(voltages)):
        raise DeviceFormatError(f"{path.name}: NaN or Inf measurements: damaged file")
    protocol = mk_stim_patterns(16, 1, [0, 1], [0, 1], ["no_meas_current", "rotate_meas"])
    details = {
        "file_frames": len(order), "first_sequence_number": order[0],
        "stored": f"CareFusion .eit: values {FIRST_MEASUREMENT}-"
                  f"{FIRST_MEASUREMENT + N_MEASUREMENTS - 1} of 256 per frame",
        "records": {str(k): v for k, v in sorted(counts.items())},
        "header_xml": data[2:min(header, 2 + 2 * 2000)].decode("utf-16-le", errors="replace"),
    }
    return DeviceFile(format="carefusion-eit", device=DEVICE, voltages=voltages,
                      protocol=protocol, protocol_description=PROTOCOL_DESCRIPTION,
                      frame_rate=None, reciprocals_measured=True, details=details)
