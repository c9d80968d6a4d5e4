"""Swisstom BB2 / Pioneer (now Sentec) `.eit` files, formats LQ2/LQ3 and LQ4:
`--format swisstom-eit`.

Layout, from EIDORS `eidors/interface/eidors_readdata.m` (eidors3d/eidors-readonly),
subfunctions `is_eit_file_a_swisstom_file`, `landquart2_readdata` and `landquart4_readdata`
(no Swisstom documentation is public):
- LQ4 (2015+): little-endian int32 format version 4, int32 header size H, 16 bytes, int32 frame
  count N (byte 24). From byte H, records of: int64 absolute time stamp (ms), int32 type, int32
  payload length P, then P bytes. Type 0 is an EIT frame: 15 int32 (the fifth: a relative time
  stamp in microseconds), 12 bytes, 64 int32 (32 complex electrode-impedance readings), 2048
  int32 (1024 I/Q pairs: the 32 x 32 measurements), the rest of P. Type 1 is an event (its
  first 4 payload bytes an int32 event id); other types are skipped.
- LQ2/LQ3 (2013-2014): a big-endian int32 format version (EIDORS reads only 3), the frame count
  at byte 20, a 2264-byte header; then records of int64 time stamp (ms), int32 payload length P,
  12 int32 (the fifth: the relative time stamp, us), 12 bytes, 64 + 2048 int32 as above, every
  record P + 12 bytes long (EIDORS takes P from the first record). Payload little-endian.
- The 1024 complex values per frame are I + jQ scaled by 2.048 / (2^20 x 360 x 1000) (EIDORS:
  "this is just a simple guess"), injection-major in EIDORS's `no_rotate_meas` order with
  every measurement pair (`meas_current`); EIDORS attaches `mk_stim_patterns(32, 1, [0, 5],
  [0, 5], {'no_rotate_meas', 'no_meas_current'}, 0.005)`.
LQ1 (2010-2011, a codec header of embedded files, no time stamps) is not read.

What this reader returns: the in-phase part I (our recordings are real-valued: difference
imaging of the resistive part; the quadrature part's rms relative to I's is kept in the
details), the 928 channels of EIDORS's protocol (those without a current-carrying electrode),
frame times from the relative time stamps (unwrapped modulo 2^32 us), else from the absolute
ones. The frame rate is not stated in the layout EIDORS reads: it is estimated from the time
stamps. The electrode placement is not in any public source we read: device electrode i is
model electrode i.

Verified only against synthetic files written from this layout (tests/worker/devices/
test_eit_formats.py); NOT against a real device file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from service.contract.stim_patterns import mk_stim_patterns
from worker.devices.device_file import ByteReader, DeviceFile, DeviceFormatError, channel_index

DEVICE = "Swisstom BB2 / Pioneer (Sentec), 32 electrodes"
N_ELECTRODES = 32
IQ_VALUES = 2 * N_ELECTRODES * N_ELECTRODES
VI_VALUES = 64
AMPLITUDE_FACTOR = 2.048 / (2**20 * 360 * 1000)  # EIDORS's "simple guess"
LQ4_FRAME_HEAD = 15 * 4 + 12 + VI_VALUES * 4  # 328 bytes before the I/Q payload
LQ2_HEADER_BYTES = 2264
PROTOCOL_ARGS = (N_ELECTRODES, 1, [0, 5], [0, 5])
PROTOCOL_DESCRIPTION = ("EIDORS mk_stim_patterns(32, 1, [0, 5], [0, 5], "
                        "{'no_rotate_meas', 'no_meas_current'}, 1)")


def swisstom_version(head: bytes) -> int | None:
    """The LQ format version from the first 4 bytes (EIDORS's test), or None."""
    if len(head) < 4:
        return None
    if head[:3] == b"\0\0\0" and head[3] in (2, 3):
        return head[3]
    if head[:4] == b"\x04\0\0\0":
        return 4
    return None


def _lq4_frames(reader: ByteReader) -> tuple[list[np.ndarray], list[int], list[int], int, int]:
    """(I/Q payloads, relative stamps us, absolute stamps ms, events, expected frames)."""
    reader.seek(4, "the header size")
    header_size = int(reader.scalar("i4", "the header size"))
    reader.seek(24, "the frame count")
    expected = int(reader.scalar("i4", "the frame count"))
    reader.seek(header_size, f"the first record (header size {header_size})")
    payloads, rel, absolute, events = [], [], [], 0
    while reader.remaining() > 0:
        stamp = int(reader.scalar("i8", "a record's time stamp"))
        kind = int(reader.scalar("i4", "a record's type"))
        length = int(reader.scalar("i4", "a record's payload length"))
        start = reader.pos
        if length < 0:
            raise DeviceFormatError(f"{reader.name}: record at byte {start - 16} has a "
                                    f"negative payload length {length}: damaged file")
        if kind == 0:
            if length < LQ4_FRAME_HEAD + 4 * IQ_VALUES:
                raise DeviceFormatError(f"{reader.name}: EIT frame at byte {start - 16} has a "
                                        f"{length}-byte payload, shorter than the "
                                        f"{LQ4_FRAME_HEAD + 4 * IQ_VALUES} the layout needs")
            head = reader.array("i4", 15, "an EIT frame header")
            reader.take(12 + 4 * VI_VALUES, "an EIT frame's impedance readings")
            payloads.append(reader.array("i4", IQ_VALUES, "an EIT frame's I/Q values"))
            rel.append(int(head[4]))
            absolute.append(stamp)
        elif kind == 1:
            events += 1
        reader.seek(start + length, f"the end of the record at byte {start - 16}")
    return payloads, rel, absolute, events, expected


def _lq2_frames(reader: ByteReader) -> tuple[list[np.ndarray], list[int], list[int], int, int]:
    big = ByteReader(reader.data, reader.name, ">")
    big.seek(20, "the frame count")
    expected = int(big.scalar("i4", "the frame count"))
    reader.seek(LQ2_HEADER_BYTES + 8, "the first frame's length")
    record = int(reader.scalar("i4", "the first frame's length")) + 12
    if record < 12 + 48 + 12 + 4 * (VI_VALUES + IQ_VALUES):
        raise DeviceFormatError(f"{reader.name}: frame length {record} is shorter than the "
                                "layout needs")
    payloads, rel, absolute = [], [], []
    n_records, rest = divmod(len(reader.data) - LQ2_HEADER_BYTES, record)
    if rest:
        raise DeviceFormatError(f"{reader.name}: {len(reader.data) - LQ2_HEADER_BYTES} bytes "
                                f"after the header is not a whole number of {record}-byte "
                                "frames: truncated or damaged")
    for k in range(n_records):
        reader.seek(LQ2_HEADER_BYTES + k * record, "a frame")
        absolute.append(int(reader.scalar("i8", "a frame's time stamp")))
        reader.take(4, "a frame's length")
        head = reader.array("i4", 12, "a frame header")
        reader.take(12 + 4 * VI_VALUES, "a frame's impedance readings")
        payloads.append(reader.array("i4", IQ_VALUES, "a frame's I/Q values"))
        rel.append(int(head[4]))
    return payloads, rel, absolute, 0, expected


def _times(rel: list[int], absolute: list[int]) -> tuple[np.ndarray | None, str]:
    """Seconds from the first frame: relative stamps (us, unwrapped mod 2^32), else absolute
    ones (ms); None when neither increases strictly."""
    if len(rel) > 1:
        steps = np.diff(np.asarray(rel, dtype=np.int64)) % 2**32
        times = np.concatenate([[0.0], np.cumsum(steps) / 1e6])
        if np.all(steps > 0) and np.all(steps < 2**31):
            return times, "relative time stamps (us)"
    seconds = (np.asarray(absolute, dtype=np.int64) - absolute[0]) / 1e3
    if np.all(np.diff(seconds) > 0):
        return seconds, "absolute time stamps (ms)"
    return None, "none (time stamps do not increase)"


def read_swisstom_eit(path: str | Path) -> DeviceFile:
    """Read a Swisstom BB2 / Pioneer `.eit` file, LQ2/LQ3 or LQ4 (see the module doc)."""
    path = Path(path)
    data = path.read_bytes()
    version = swisstom_version(data[:4])
    if version is None:
        raise DeviceFormatError(f"{path.name}: the first 4 bytes are not a Swisstom format "
                                "version (LQ2/LQ3: big-endian 2 or 3; LQ4: little-endian 4): "
                                "not a Swisstom .eit file")
    if version == 2:
        raise DeviceFormatError(f"{path.name}: Swisstom LQ2 version 2: EIDORS reads only "
                                "version 3 of this layout; not supported")
    reader = ByteReader(data, path.name)
    read = _lq4_frames if version == 4 else _lq2_frames
    payloads, rel, absolute, events, expected = read(reader)
    if not payloads:
        raise DeviceFormatError(f"{path.name}: no EIT frame in the file")
    iq = np.stack(payloads).astype(np.float64)
    full = mk_stim_patterns(*PROTOCOL_ARGS, ["no_rotate_meas", "meas_current"])
    protocol = mk_stim_patterns(*PROTOCOL_ARGS, ["no_rotate_meas", "no_meas_current"])
    keep = channel_index(full, protocol)
    in_phase = AMPLITUDE_FACTOR * iq[:, 0::2][:, keep]
    quadrature = AMPLITUDE_FACTOR * iq[:, 1::2][:, keep]
    times, times_from = _times(rel, absolute)
    rate = None if times is None else float(1 / np.median(np.diff(times)))
    rms_i = float(np.sqrt(np.mean(in_phase**2)))
    details = {
        "file_frames": len(payloads), "header_frames": expected,
        "stored": f"Swisstom LQ{version}: 32 x 32 I/Q per frame, {len(protocol['measurements'])} "
                  "channels kept (no current-carrying electrode), in-phase part",
        "events": events, "frame_times_from": times_from,
        "quadrature_rms_over_in_phase": (float(np.sqrt(np.mean(quadrature**2))) / rms_i
                                         if rms_i > 0 else None),
    }
    return DeviceFile(format="swisstom-eit", device=DEVICE, voltages=in_phase,
                      protocol=protocol, protocol_description=PROTOCOL_DESCRIPTION,
                      frame_rate=rate, reciprocals_measured=True, details=details,
                      frame_times=times)

