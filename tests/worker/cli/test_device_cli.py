"""`eitmon device --replay`: a belt streaming a recording into a running API."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis
from typer.testing import CliRunner

from service.contract.keys import session_key
from service.contract.tokens import FRAMES_WRITE, SCOPES, VOLUMES_READ, create_token
from worker.cli.main import app
from worker.recording import Recording
from worker.runtime.local import Child, start_api

SECRET = "device-test-secret-0123456789abcdef01234567"
META = {"geometry": {"preset": "thorax-1x16", "mesh_size": 0.025}, "protocol": "skip4",
        "grid": [4, 8, 8]}
M = 208  # skip4 on 16 electrodes
runner = CliRunner()


@pytest.fixture
def api(redis_url: str) -> Iterator[Child]:
    child = start_api(redis_url, SECRET, quiet=True)
    yield child
    child.stop()


@pytest.fixture
def recording(tmp_path: Path) -> Recording:
    rng = np.random.default_rng(1)
    rec = Recording(voltages=1 + 0.01 * rng.standard_normal((12, M)),
                    reference=1 + 0.01 * rng.standard_normal(M),
                    frame_times=np.arange(12) / 20, mask=np.ones((4, 8, 8), dtype=bool),
                    meta=META)
    rec.save(tmp_path / "rec.npz")
    return rec


def session(api: Child, sid: str) -> dict:
    token = create_token(SECRET, [VOLUMES_READ], 60)
    return httpx.get(f"{api.url}/v1/sessions/{sid}", trust_env=False,
                     headers={"Authorization": f"Bearer {token}"}).json()


def device(api: Child, tmp_path: Path, *args: str, scopes: tuple[str, ...] = SCOPES,
           sessions: list[str] | None = None):
    token = create_token(SECRET, scopes, 60, sessions=sessions)
    return runner.invoke(app, ["device", "--replay", str(tmp_path / "rec.npz"), "--url",
                               api.url, "--token", token, *args])


def test_replay_into_a_new_session_at_the_rate(api: Child, tmp_path: Path, redis_url: str,
                                               recording: Recording) -> None:
    t0 = time.monotonic()
    result = device(api, tmp_path, "--rate", "40", "--close")
    assert result.exit_code == 0, result.output
    assert time.monotonic() - t0 >= 11 / 40
    sid = result.stdout.strip().splitlines()[-1]
    info = session(api, sid)
    assert (info["status"], info["last_seq"], info["counters"]["accepted"]) == ("closed", 11, 12)
    assert info["settings"]["reference"] == {"mode": "explicit"}
    stored = redis.Redis.from_url(redis_url).hget(session_key(sid), "reference")
    np.testing.assert_array_equal(np.frombuffer(stored, "<f4"),
                                  recording.reference.astype("<f4"))


def test_replay_continues_an_existing_session_with_json_batches(
        api: Child, tmp_path: Path, recording: Recording) -> None:
    first = device(api, tmp_path, "--rate", "200")
    sid = first.stdout.strip().splitlines()[-1]
    again = device(api, tmp_path, "--rate", "200", "--session", sid, "--json", "--batch", "5")
    assert again.exit_code == 0, again.output
    info = session(api, sid)
    assert info["last_seq"] == 23 and info["counters"]["accepted"] == 24
    assert info["counters"]["duplicate"] == 0


def test_a_refusal_is_reported_cleanly(api: Child, tmp_path: Path, recording: Recording) -> None:
    result = device(api, tmp_path, scopes=(VOLUMES_READ,))
    assert result.exit_code == 1
    assert "403 insufficient_scope" in result.output and "Traceback" not in result.output
    assert "eyJ" not in result.output  # the token is never echoed


def test_replays_an_imported_real_recording(api: Child, tmp_path: Path) -> None:
    """A real Goe-MF II slice, imported (explicit EIDORS protocol, no mask), streams as is."""
    data = Path(__file__).resolve().parents[2] / "data" / "realdata"
    imported = runner.invoke(app, ["import", str(data / "P04P-1016-first40.get"), "--format",
                                   "get", "--out", str(tmp_path / "rec.npz"), "--no-check"])
    assert imported.exit_code == 0, imported.output
    recording = Recording.load(tmp_path / "rec.npz")
    assert recording.mask is None and recording.n_measurements == 208
    result = device(api, tmp_path, "--rate", "200", "--close")
    assert result.exit_code == 0, result.output
    info = session(api, result.stdout.strip().splitlines()[-1])
    assert (info["status"], info["counters"]["accepted"]) == ("closed", 40)


def test_duplicates_the_belt_did_not_send_are_an_error(api: Child, tmp_path: Path,
                                                       recording: Recording) -> None:
    """A session-bound device token continues its session; a belt that cannot read the session
    starts at seq 0, finds those seqs taken, and says so instead of streaming into nothing."""
    sid = device(api, tmp_path, "--rate", "200").stdout.strip().splitlines()[-1]
    bound = device(api, tmp_path, "--rate", "200", "--session", sid,
                   scopes=(FRAMES_WRITE, VOLUMES_READ), sessions=[sid])
    assert bound.exit_code == 0, bound.output
    assert session(api, sid)["last_seq"] == 23
    blind = device(api, tmp_path, "--rate", "200", "--session", sid, scopes=(FRAMES_WRITE,),
                   sessions=[sid])
    assert blind.exit_code == 1
    assert "did not send" in blind.output and "Traceback" not in blind.output
    info = session(api, sid)
    assert info["last_seq"] == 23 and info["counters"]["duplicate"] == 1
    other = device(api, tmp_path, "--rate", "200").stdout.strip().splitlines()[-1]
    refused = device(api, tmp_path, "--session", other, scopes=(FRAMES_WRITE,), sessions=[sid])
    assert refused.exit_code == 1 and "403 session_not_permitted" in refused.output
