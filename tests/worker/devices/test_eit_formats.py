"""The `.eit` readers (Dräger, Swisstom, CareFusion) on synthetic files.

No real file of these formats is available: each test writes a small file byte for byte from
the layout documented in the reader's module doc (EIDORS `eidors_readdata.m`, and for Dräger a
published hex dump of a real file), with its own `struct` writer that does not use the
readers' code or constants, and checks that the voltages, frame times and protocol come back;
truncated and wrong files must give a clear message (and exit 2 from the CLI, no traceback).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from service.contract.protocol import resolve_protocol
from tests.worker.devices.conftest import NEONATE
from worker.cli.main import app
from worker.devices import DeviceFormatError, read_device_file
from worker.devices.device_file import channel_index
from worker.devices.goettingen import read_get
from worker.recording import Recording

RNG = np.random.default_rng(19)


def cli(*args: str) -> Any:
    result = CliRunner().invoke(app, ["import", *args])
    assert "Traceback" not in result.output
    return result


def rotated_adjacent_pairs(n: int = 16) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """(drive, measurement) of EIDORS's adjacent `rotate_meas`, `no_meas_current` order: for
    drive (d, d+1), the pairs (d+2+k, d+3+k), k = 0..12, written out here independently."""
    return [((d, (d + 1) % n), ((d + 2 + k) % n, (d + 3 + k) % n))
            for d in range(n) for k in range(n - 3)]


def protocol_pairs(protocol: dict[str, Any]) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """(drive, measurement) electrodes of an explicit protocol, in the order listed."""
    return [(tuple(protocol["injections"][m["injection"]]["electrodes"]),
             tuple(m["electrodes"])) for m in protocol["measurements"]]


# ---------------------------------------------------------------- Dräger PulmoVista .eit

DRAEGER_FT = (0.00098242, 0.00019607)  # EIDORS's combination of the sets A and B


def write_draeger(path: Path, a: np.ndarray, b: np.ndarray, stamps: np.ndarray,
                  rate: str = "50", version: int = 51, stride: int = 5495) -> Path:
    """A version-51 file: int32 version, uint32 L, int32; text to L; '**' CR LF x 3; frames of
    `stride` bytes: float64 fraction-of-day stamp, 600 float64 (A at 0, B at 322), filler."""
    text = ("\r\n\r\n*******************************\r\n---Draeger EIT-Software V1.30---\r\n"
            "\r\nDate:      04.01.2024\r\nTime:      18:10:54.015\r\nFormat:    51\r\n"
            "\r\n*******************************\r\n----------System Data----------\r\n"
            f"Frequency [kHz]:   101.501\r\nFramerate [Hz]:    {rate}\r\n"
            "Amplitude [uA]:    9100\r\n\r\n*****************************"
            ).encode("latin-1")
    header_end = 12 + len(text)
    out = bytearray(struct.pack("<iIi", version, header_end, 1578) + text + b"**\r\n\r\n\r\n")
    for stamp, set_a, set_b in zip(stamps, a, b, strict=True):
        block = RNG.normal(size=600) * 1e-3
        block[208:224] = 0.0  # small values, then the currents (9.1 mA) as in the dump
        block[224:240] = 9.1
        block[0:208], block[322:530] = set_a, set_b
        frame = struct.pack("<d", stamp) + struct.pack("<600d", *block)
        out += frame + b"\xff" * (stride - len(frame))
    path.write_bytes(bytes(out))
    return path


def draeger_data(n_frames: int = 12) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a = 10 + RNG.normal(size=(n_frames, 208))
    b = 2 + RNG.normal(size=(n_frames, 208))
    stamps = 0.75757 + np.arange(n_frames) / (50 * 86400) + RNG.uniform(0, 1e-9, n_frames)
    return a, b, stamps


def test_draeger_round_trip(tmp_path: Path) -> None:
    a, b, stamps = draeger_data()
    dev = read_device_file(write_draeger(tmp_path / "d.eit", a, b, stamps), "draeger-eit")
    np.testing.assert_allclose(dev.voltages, DRAEGER_FT[0] * a - DRAEGER_FT[1] * b, rtol=1e-12)
    np.testing.assert_allclose(dev.frame_times, (stamps - stamps[0]) * 86400, atol=1e-6)
    assert dev.frame_rate == 50.0 and dev.model_electrode is None
    assert dev.details["frame_times_from"] == "time stamps"
    assert protocol_pairs(dev.protocol) == [((d0, d1), m) for (d0, d1), m
                                            in rotated_adjacent_pairs()]
    # EIDORS's current sign: -1 on the first driven electrode
    assert dev.protocol["injections"][0]["currents"] == [-1.0, 1.0]


def test_draeger_midnight_and_bad_stamps(tmp_path: Path) -> None:
    a, b, _ = draeger_data(6)
    stamps = (1 - 2.5 / 86400 + np.arange(6) * 1.0 / 86400) % 1  # crosses midnight
    dev = read_device_file(write_draeger(tmp_path / "m.eit", a, b, stamps), "draeger-eit")
    np.testing.assert_allclose(dev.frame_times, np.arange(6.0), atol=1e-6)
    flat = read_device_file(write_draeger(tmp_path / "f.eit", a, b, np.zeros(6)), "eit")
    assert flat.frame_times is None and flat.details["frame_times_from"] == "header frame rate"


def test_draeger_version_32(tmp_path: Path) -> None:
    """Version 32: EIDORS's 5200-byte stride; its time stamp is not read (no dump of one)."""
    a, b, stamps = draeger_data(4)
    path = write_draeger(tmp_path / "v32.eit", a, b, stamps, rate="20", version=32,
                         stride=5200)
    dev = read_device_file(path, "eit")
    np.testing.assert_allclose(dev.voltages, DRAEGER_FT[0] * a - DRAEGER_FT[1] * b, rtol=1e-12)
    assert dev.frame_times is None and dev.frame_rate == 20.0


def test_draeger_carries_real_get_values_in_the_same_channels(tmp_path: Path) -> None:
    """The neonate slice's raw `.get` values (the same rotated order) as set A: mapped through
    the two readers' protocols, the channels agree value for value with the `.get` reader's."""
    raw = np.fromfile(NEONATE, dtype="<f4").reshape(-1, 256)[:, :208].astype(float)
    stamps = 0.5 + np.arange(len(raw)) / (13 * 86400)
    path = write_draeger(tmp_path / "n.eit", raw / DRAEGER_FT[0], np.zeros_like(raw), stamps)
    draeger, get = read_device_file(path, "eit"), read_get(NEONATE)
    mapped = draeger.voltages[:, channel_index(draeger.protocol, get.protocol)]
    np.testing.assert_allclose(mapped, get.voltages, rtol=1e-12)
    # and the same physical currents: the two protocols drive the same signs
    assert all(draeger.protocol["injections"][i] == get.protocol["injections"][i]
               for i in range(16))


@pytest.mark.parametrize(("damage", "message"), [
    (lambda d: d[:-100], "not a whole number of 5495-byte frames"),
    (lambda d: d[:200], "truncated: the header ends"),
    (lambda d: d.replace(b"**\r\n\r\n\r\n", b"xx\r\n\r\n\r\n"), "does not end with"),
    (lambda d: struct.pack("<i", 31) + d[4:], "version 31 is not supported"),
    (lambda d: d.replace(b"---Draeger", b"---Someone"), "not a Dräger .eit file"),
])
def test_draeger_damaged(tmp_path: Path, damage: Any, message: str) -> None:
    good = write_draeger(tmp_path / "g.eit", *draeger_data(3)).read_bytes()
    bad = tmp_path / "bad.eit"
    bad.write_bytes(damage(good))
    with pytest.raises(DeviceFormatError, match=message):
        read_device_file(bad, "draeger-eit")


def test_draeger_through_the_cli(tmp_path: Path) -> None:
    a, b, stamps = draeger_data(20)
    path = write_draeger(tmp_path / "d.eit", a, b, stamps)
    out = tmp_path / "d.npz"
    result = cli(str(path), "--format", "eit", "--out", str(out), "--no-check")
    assert result.exit_code == 0, result.output
    assert "20 frames of 208 measurements at 50 frames/s" in result.output
    rec = Recording.load(out)
    np.testing.assert_allclose(rec.voltages, DRAEGER_FT[0] * a - DRAEGER_FT[1] * b)
    np.testing.assert_allclose(rec.frame_times, (stamps - stamps[0]) * 86400, atol=1e-6)
    assert rec.meta["geometry"] == "thorax-1x16" and rec.meta["model_electrode"] is None
    assert rec.meta["source"]["frame_rate_from"] == "file time stamps"
    assert rec.meta["source"]["header"]["Amplitude [uA]"] == "9100"
    truncated = tmp_path / "t.eit"
    truncated.write_bytes(path.read_bytes()[:-10])
    result = cli(str(truncated), "--format", "draeger-eit", "--out", str(out), "--no-check")
    assert result.exit_code == 2 and "error: t.eit:" in result.output
    assert "not a whole number" in result.output


# ---------------------------------------------------------------- Swisstom LQ4 / LQ3

SWISSTOM_SCALE = 2.048 / (2**20 * 360 * 1000)  # EIDORS's amplitude guess


def kept_skip4_pairs() -> list[tuple[int, int]]:
    """(injection, m) of the 32 x 32 skip-4 measurements without a current-carrying
    electrode, injection-major, m ascending (EIDORS `no_rotate_meas`, `no_meas_current`)."""
    return [(d, m) for d in range(32) for m in range(32)
            if not {m, (m + 5) % 32} & {d, (d + 5) % 32}]


def iq_frames(n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """I and Q, (T, 32 injections, 32 measurement pairs), as int32 counts."""
    i = RNG.integers(-2**20, 2**20, size=(n_frames, 32, 32))
    q = RNG.integers(-2**16, 2**16, size=(n_frames, 32, 32))
    return i, q


def lq_payload(i: np.ndarray, q: np.ndarray) -> bytes:
    interleaved = np.stack([i.reshape(-1), q.reshape(-1)], axis=1).reshape(-1)
    return struct.pack("<2048i", *interleaved)


def write_lq4(path: Path, i: np.ndarray, q: np.ndarray, rel_us: list[int],
              abs_ms: list[int]) -> Path:
    """Version 4: header (int32 4, int32 H, 16 bytes, int32 frame count, padding to H); an
    event record; per frame a record (int64 ms, int32 type 0, int32 payload length; 15 int32
    with the relative stamp 5th, 12 bytes, 64 int32, 2048 int32, 20 trailing bytes); one
    record of an unknown type."""
    header_size = 96
    out = bytearray(struct.pack("<ii", 4, header_size) + b"\0" * 16
                    + struct.pack("<i", len(i)))
    out += b"\0" * (header_size - len(out))
    out += struct.pack("<qiii", abs_ms[0] - 5, 1, 4, 77)  # event id 77
    for k in range(len(i)):
        head = [0] * 15
        head[4] = rel_us[k]
        payload = (struct.pack("<15i", *head) + b"\x01" * 12 + struct.pack("<64i", *range(64))
                   + lq_payload(i[k], q[k]) + b"\x02" * 20)
        out += struct.pack("<qii", abs_ms[k], 0, len(payload)) + payload
    out += struct.pack("<qii", abs_ms[-1] + 1, 9, 8) + b"\x03" * 8
    path.write_bytes(bytes(out))
    return path


def write_lq3(path: Path, i: np.ndarray, q: np.ndarray, rel_us: list[int],
              abs_ms: list[int]) -> Path:
    """Version 3: big-endian int32 3, frame count (big-endian) at byte 20, 2264-byte header;
    frames of int64 ms, int32 P, 12 int32 (relative stamp 5th), 12 bytes, 64 + 2048 int32,
    P + 12 bytes each."""
    out = bytearray(struct.pack(">i", 3) + b"\0" * 16 + struct.pack(">i", len(i)))
    out += b"\0" * (2264 - len(out))
    for k in range(len(i)):
        head = [0] * 12
        head[4] = rel_us[k]
        body = (struct.pack("<12i", *head) + b"\x01" * 12 + struct.pack("<64i", *range(64))
                + lq_payload(i[k], q[k]))
        out += struct.pack("<qi", abs_ms[k], len(body)) + body
    path.write_bytes(bytes(out))
    return path


def swisstom_expected(i: np.ndarray) -> np.ndarray:
    return SWISSTOM_SCALE * np.stack([[frame[d, m] for d, m in kept_skip4_pairs()]
                                      for frame in i])


@pytest.mark.parametrize("writer", [write_lq4, write_lq3])
def test_swisstom_round_trip(tmp_path: Path, writer: Any) -> None:
    n = 7
    i, q = iq_frames(n)
    start = 2**31 - 30_000  # the relative stamps wrap past the int32 range
    rel = [((start + 20_000 * k + 2**31) % 2**32) - 2**31 for k in range(n)]
    abs_ms = [1_700_000_000_000 + 20 * k + k % 2 for k in range(n)]  # ms, coarser
    dev = read_device_file(writer(tmp_path / "s.eit", i, q, rel, abs_ms), "swisstom-eit")
    assert dev.details["frame_times_from"] == "relative time stamps (us)"
    np.testing.assert_allclose(dev.voltages, swisstom_expected(i), rtol=1e-12)
    np.testing.assert_allclose(dev.frame_times, 0.02 * np.arange(n), atol=1e-9)
    assert dev.frame_rate == pytest.approx(50.0) and dev.voltages.shape == (n, 928)
    assert protocol_pairs(dev.protocol) == [((d, (d + 5) % 32), (m, (m + 5) % 32))
                                            for d, m in kept_skip4_pairs()]
    assert dev.details["events"] == (1 if writer is write_lq4 else 0)
    assert dev.details["header_frames"] == n
    assert 0 < dev.details["quadrature_rms_over_in_phase"] < 0.2


def test_swisstom_absolute_stamps_when_relative_ones_stall(tmp_path: Path) -> None:
    i, q = iq_frames(3)
    path = write_lq4(tmp_path / "s.eit", i, q, [5, 5, 5], [1000, 1021, 1040])
    dev = read_device_file(path, "eit")
    np.testing.assert_allclose(dev.frame_times, [0, 0.021, 0.040])
    assert dev.details["frame_times_from"] == "absolute time stamps (ms)"


@pytest.mark.parametrize(("damage", "message"), [
    (lambda d: d[:-30], "truncated"),
    (lambda d: d[:-8300], "truncated"),
    (lambda d: struct.pack(">i", 2) + d[4:], "version 2"),
    (lambda d: b"\x07\0\0\0" + d[4:], "not a Swisstom .eit file"),
])
def test_swisstom_damaged(tmp_path: Path, damage: Any, message: str) -> None:
    i, q = iq_frames(2)
    good = write_lq4(tmp_path / "g.eit", i, q, [0, 20_000], [0, 20]).read_bytes()
    bad = tmp_path / "bad.eit"
    bad.write_bytes(damage(good))
    with pytest.raises(DeviceFormatError, match=message):
        read_device_file(bad, "swisstom-eit")


def test_swisstom_through_the_cli_picks_a_32_electrode_ring(tmp_path: Path) -> None:
    i, q = iq_frames(5)
    path = write_lq4(tmp_path / "s.eit", i, q, [20_000 * k for k in range(5)],
                     [20 * k for k in range(5)])
    out = tmp_path / "s.npz"
    result = cli(str(path), "--format", "eit", "--out", str(out), "--no-check")
    assert result.exit_code == 0, result.output
    rec = Recording.load(out)
    assert rec.meta["geometry"] == "thorax-1x32" and rec.voltages.shape == (5, 928)
    assert resolve_protocol(rec.meta["protocol"]).build(32).n_measurements == 928


# ---------------------------------------------------------------- CareFusion .eit

def write_carefusion(path: Path, values: dict[int, np.ndarray], header_bytes: int = 512,
                     extra_frame: tuple[int, np.ndarray] | None = None) -> Path:
    """UTF-16 LE XML header (BOM, '<?xml version="1.0" ?>', '<EIT_File>', '<Header>N
    bytes</Header>') padded to N bytes; records of 6 int32 + payload: a waveform (type 8),
    the EIT frames (type 3, 256 float32, measurements at 47..254) in the dict's order, an
    image (type 7, 912 words), a type-10 record."""
    xml = (f'<?xml version="1.0" ?><EIT_File><Header>{header_bytes} bytes</Header>'
           "<Frames>rate unknown</Frames>")
    head = b"\xff\xfe" + xml.encode("utf-16-le")
    head += " ".encode("utf-16-le") * ((header_bytes - len(head)) // 2)
    assert len(head) == header_bytes
    out = bytearray(head)
    out += struct.pack("<6i", 8, 0, 0, 4, 13, 0) + struct.pack("<13f", *range(13))
    frames = list(values.items()) + ([extra_frame] if extra_frame else [])
    for sequence, measurement in frames:
        frame = np.full(256, -5.0, dtype=np.float32)
        frame[47:255] = measurement
        out += struct.pack("<6i", 3, 0, sequence, 4, 256, 0) + frame.astype("<f4").tobytes()
        if sequence == 0:
            out += struct.pack("<6i", 7, 0, 0, 4, 912, 0) + b"\0" * (4 * 912)
    out += struct.pack("<6i", 10, 0, 0, 4, 2, 0) + b"\0" * 8
    path.write_bytes(bytes(out))
    return path


def carefusion_values(n: int) -> dict[int, np.ndarray]:
    """Frames written out of order (sequence numbers 1, 0, 2, ...)."""
    order = [1, 0, *range(2, n)]
    return {k: (1 + RNG.random(208)).astype(np.float32) for k in order}


def test_carefusion_round_trip(tmp_path: Path) -> None:
    values = carefusion_values(6)
    dev = read_device_file(write_carefusion(tmp_path / "c.eit", values), "carefusion-eit")
    np.testing.assert_array_equal(dev.voltages, np.stack([values[k] for k in range(6)]))
    assert dev.frame_rate is None and dev.frame_times is None
    assert protocol_pairs(dev.protocol) == rotated_adjacent_pairs()
    assert dev.details["records"] == {"3": 6, "7": 1, "8": 1, "10": 1}
    assert "<EIT_File>" in dev.details["header_xml"]
    assert read_device_file(tmp_path / "c.eit", "eit").format == "carefusion-eit"


def test_carefusion_refusals(tmp_path: Path) -> None:
    values = carefusion_values(4)
    twice = write_carefusion(tmp_path / "twice.eit", values, extra_frame=(2, values[2]))
    with pytest.raises(DeviceFormatError, match="sequence number 2 appears twice"):
        read_device_file(twice, "carefusion-eit")
    del values[2]
    gap = write_carefusion(tmp_path / "gap.eit", values)
    with pytest.raises(DeviceFormatError, match="1 frames missing .sequence number 2 first"):
        read_device_file(gap, "carefusion-eit")
    good = write_carefusion(tmp_path / "good.eit", carefusion_values(3)).read_bytes()
    cut = tmp_path / "cut.eit"
    cut.write_bytes(good[:-20])
    with pytest.raises(DeviceFormatError, match="truncated"):
        read_device_file(cut, "carefusion-eit")
    with pytest.raises(DeviceFormatError, match="not a CareFusion .eit file"):
        read_device_file(NEONATE, "carefusion-eit")


def test_carefusion_through_the_cli_needs_a_rate(tmp_path: Path) -> None:
    values = carefusion_values(8)
    path = write_carefusion(tmp_path / "c.eit", values)
    out = tmp_path / "c.npz"
    result = cli(str(path), "--format", "eit", "--out", str(out), "--no-check")
    assert result.exit_code == 2 and "states no frame rate; give --rate" in result.output
    result = cli(str(path), "--format", "eit", "--out", str(out), "--no-check", "--rate", "25")
    assert result.exit_code == 0, result.output
    rec = Recording.load(out)
    np.testing.assert_allclose(rec.frame_times, np.arange(8) / 25)
    np.testing.assert_allclose(rec.voltages, np.stack([values[k] for k in range(8)]))


def test_draeger_import_checks_the_sign_against_the_model(
        tmp_path: Path, model_cache_dir: str, coarse_ring_geometry_file: Path) -> None:
    """The real neonate values in the Dräger layout import with the homogeneous-model check
    passing; negated (the sign EIDORS's combination would give if it were the other way
    round), the same file is refused: the check guards the layout's unverified sign."""
    from tests.worker.devices.conftest import COARSE_RING_GRID

    raw = np.fromfile(NEONATE, dtype="<f4").reshape(-1, 256)[:, :208].astype(float)
    stamps = 0.5 + np.arange(len(raw)) / (13 * 86400)
    grid = ",".join(map(str, COARSE_RING_GRID))
    for sign, code in ((1, 0), (-1, 2)):
        path = write_draeger(tmp_path / f"n{sign}.eit", sign * raw / DRAEGER_FT[0],
                             np.zeros_like(raw), stamps, rate="13")
        out = tmp_path / f"n{sign}.npz"
        result = cli(str(path), "--format", "eit", "--out", str(out), "--geometry",
                     str(coarse_ring_geometry_file), "--grid", grid)
        assert result.exit_code == code, result.output
        if sign > 0:
            assert "model check: the measured reference matches" in result.output
            assert Recording.load(out).meta["protocol_check"]["overall"] > 0.9
        else:
            assert "sign looks flipped" in result.output and not out.exists()


def test_cut_or_corrupted_files_give_a_format_error_not_a_crash(tmp_path: Path) -> None:
    """Each synthetic file cut at random lengths, and with random bytes overwritten: the
    reader returns or raises DeviceFormatError (a ValueError the CLI prints), nothing else."""
    i, q = iq_frames(2)
    files = [write_draeger(tmp_path / "d.eit", *draeger_data(2)),
             write_lq4(tmp_path / "s.eit", i, q, [0, 20_000], [0, 20]),
             write_lq3(tmp_path / "s3.eit", i, q, [0, 20_000], [0, 20]),
             write_carefusion(tmp_path / "c.eit", carefusion_values(2))]
    rng = np.random.default_rng(7)
    bad = tmp_path / "bad.eit"
    for path in files:
        good = path.read_bytes()
        for _ in range(25):
            data = bytearray(good[:int(rng.integers(0, len(good)))])
            if rng.random() < 0.5 and data:
                spots = rng.integers(0, len(data), size=8)
                data_array = np.frombuffer(bytes(data), dtype=np.uint8).copy()
                data_array[spots] = rng.integers(0, 256, size=8)
                data = bytearray(data_array.tobytes())
            bad.write_bytes(bytes(data))
            try:
                read_device_file(bad, "eit")
            except DeviceFormatError:
                pass
