"""Torch-freedom, the Redis contract's encoders, settings resolution, log redaction."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from service import wire
from service.contract.codecs import (
    Lease,
    Result,
    decode_frame_entry,
    decode_lease,
    decode_result,
    encode_close,
    encode_frame,
    encode_lease,
    encode_reference,
    encode_result,
)
from service.contract.errors import describe_error
from service.contract.keys import lease_key, session_keys
from service.logsafe import RedactFilter
from service.settings import Settings

SECRET = "unit-secret-0123456789abcdef0123456789abcdef"


def test_the_api_never_imports_torch_nor_the_worker() -> None:
    code = ("import sys\n"
            "import service.app, service.cli, service.contract.scripts, service.contract.protocol\n"
            "from service.settings import Settings\n"
            "service.app.create_app(Settings(jwt_secret='x' * 40))\n"
            "heavy = [m for m in sys.modules if m.split('.')[0] in ('torch', 'gmsh', 'worker')]\n"
            "assert not heavy, heavy\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_frame_entries_round_trip() -> None:
    v = np.linspace(-1, 1, 928)
    e = decode_frame_entry(encode_frame(41, 1.025, v))
    assert (e.kind, e.seq, e.timestamp) == ("frame", 41, 1.025)
    np.testing.assert_array_equal(e.voltages, v.astype(np.float32))
    ref = decode_frame_entry(encode_reference(v))
    assert ref.kind == "reference" and ref.seq is None
    assert decode_frame_entry(encode_close()).kind == "close"
    with pytest.raises(ValueError):
        decode_frame_entry({b"kind": b"other", b"v": b""})


def test_results_round_trip_and_reject_malformed() -> None:
    vol = np.random.default_rng(0).standard_normal((4, 5, 6))
    r = Result.from_volume(vol, dtype="float16", seq=9, timestamp=0.2, kind="preview",
                                   method="tikhonov", iterations=0, loss=None, latency_ms=3.5,
                                   lag_frames=2, worker="w", epoch=4)
    fields = encode_result(r)
    back = decode_result({k.encode(): v for k, v in fields.items()})
    assert back == r and back.loss is None
    np.testing.assert_array_equal(back.volume, vol.astype(np.float16))
    with pytest.raises(ValueError, match="data length"):
        decode_result({**fields, "data": fields["data"][:-2]})
    with pytest.raises(ValueError):
        decode_result({k: v for k, v in fields.items() if k != "seq"})


def test_keys_share_a_cluster_slot_and_lease_format() -> None:
    sid = "ab" * 16
    assert lease_key(sid) == "eitmon:lease:{" + sid + "}"
    assert all("{" + sid + "}" in k for k in session_keys(sid))
    lease = decode_lease(encode_lease("host-1:worker:2", 7))
    assert lease == Lease(worker="host-1:worker:2", epoch=7)


def test_wire_header_is_32_bytes_and_aligned() -> None:
    vol = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    msg = wire.pack_volume("float32", (2, 3, 4), 5, vol.tobytes())
    assert wire.HEADER.size == 32 and len(msg) == 32 + vol.nbytes
    header, back = wire.unpack_volume(msg)
    assert header == wire.VolumeHeader("float32", (2, 3, 4), 5)
    np.testing.assert_array_equal(back, vol)


def test_secret_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("EITMON_JWT_SECRET", "EITMON_JWT_SECRET_FILE", "EITMON_DEMO"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "secret"
    path.write_text(SECRET + "\n")
    monkeypatch.setenv("EITMON_JWT_SECRET_FILE", str(path))
    assert Settings().secret == SECRET
    monkeypatch.setenv("EITMON_JWT_SECRET", SECRET)
    with pytest.raises(ValidationError) as both:
        Settings()
    assert "not both" in describe_error(both.value)
    monkeypatch.delenv("EITMON_JWT_SECRET_FILE")
    assert Settings().secret == SECRET and not Settings().secret_generated
    monkeypatch.setenv("EITMON_JWT_SECRET", "short")
    with pytest.raises(ValidationError) as short:
        Settings()
    assert "short" not in describe_error(short.value)  # values are never echoed
    monkeypatch.delenv("EITMON_JWT_SECRET")
    with pytest.raises(ValidationError):
        Settings()
    monkeypatch.setenv("EITMON_DEMO", "1")
    a, b = Settings(), Settings()
    assert a.secret_generated and a.secret != b.secret and len(a.secret) >= 32


def test_redaction_keeps_access_log_args_intact() -> None:
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1,
                               '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:1", "GET", f"/x?t={token}", "1.1", 200), None)
    RedactFilter().filter(record)
    message = record.getMessage()
    assert token not in message and message.endswith('HTTP/1.1" 200')
    assert isinstance(record.args, tuple) and record.args[-1] == 200
