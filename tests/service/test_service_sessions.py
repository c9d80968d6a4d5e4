"""Sessions: create with defaults, inspect counters, list, close, reference, bad specs."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import numpy as np
import pytest
import redis

from service.contract.codecs import decode_control, decode_frame_entry, encode_lease, stream_id_ms
from service.contract.fields import Counter, ProgressField, SessionField
from service.contract.keys import (
    CONTROL_STREAM,
    SESSIONS_INDEX,
    WORKER_GROUP,
    counters_key,
    frames_key,
    lease_key,
    progress_key,
    session_key,
)
from service.contract.session import SessionConfig
from service.contract.tokens import FRAMES_WRITE, SESSIONS_ADMIN, VOLUMES_READ

if TYPE_CHECKING:
    from tests.service.conftest import Api

M_DEFAULT = 928  # skip4 on the 2x16 thorax belt


def test_create_with_defaults_then_get_counters(api: Api, rdb: redis.Redis) -> None:
    s = api.create_session()
    sid = s["id"]
    assert len(sid) == 32
    assert s["status"] == "open"
    assert s["n_measurements"] == M_DEFAULT
    assert s["grid"] == [16, 32, 32] and s["mask_shape"] == [16, 32, 32]
    cfg = s["settings"]
    assert cfg["geometry_preset"] == "thorax-2x16" and cfg["protocol_preset"] == "skip4"
    assert cfg["method"] == "d2ip" and cfg["realtime"] == "breath"
    assert cfg["reference"] == {"mode": "first_n", "frames": 1}
    assert s["counters"] == {"accepted": 0, "duplicate": 0, "reconstructed": 0, "coalesced": 0,
                             "rejected": 0, "failures": 0, "rejected_by_reason": {}}
    assert s["failure_reason"] is None
    assert s["lag"] == {"frames": 0, "seconds": 0.0}
    assert s["worker"] is None and s["last_seq"] is None

    # the worker's side of the contract exists: consumer groups, control entry, config
    for key in (frames_key(sid), CONTROL_STREAM):
        groups = rdb.xinfo_groups(key)
        assert [g["name"] for g in groups] == [WORKER_GROUP.encode()]
    (control_id, fields), = rdb.xrange(CONTROL_STREAM)
    kind, ctl_sid, _ = decode_control(fields)
    assert (kind, ctl_sid) == ("open", sid)
    assert rdb.hget(session_key(sid), SessionField.CONTROL_ID.value) == control_id
    cfg = SessionConfig.from_json(
        rdb.hget(session_key(sid), SessionField.CONFIG.value))
    assert cfg.n_measurements == M_DEFAULT and cfg.grid == (16, 32, 32)

    assert api.post_frames(sid, [api.frame(0), api.frame(1)]).status_code == 202
    oldest = rdb.xrange(frames_key(sid))[0][0]
    with api.client() as c:
        before = _redis_ms(rdb)
        got = c.get(f"/v1/sessions/{sid}", headers=api.auth(VOLUMES_READ)).json()
        after = _redis_ms(rdb)
    assert got["counters"]["accepted"] == 2
    assert got["last_seq"] == 1
    assert got["lag"]["frames"] == 2
    assert _age(oldest, before) <= got["lag"]["seconds"] <= _age(oldest, after)


def _redis_ms(rdb: redis.Redis) -> int:
    seconds, micros = rdb.time()
    return seconds * 1000 + micros // 1000


def _age(entry_id: bytes, now_ms: int) -> float:
    """Seconds from a frame's stream id (its XADD time) to `now_ms`, as the API computes it."""
    return max(now_ms - stream_id_ms(entry_id), 0) / 1000


@pytest.mark.parametrize(("body", "policy"), [
    ({"method": "d2ip-scaled"}, "breath"), ({"method": "tikhonov"}, "realtime"),
    ({"method": "d2ip", "realtime": "complete"}, "complete"),
    ({"method": "tv", "realtime": "breath"}, "breath")])
def test_policy_defaults_to_breath_for_d2ip(api: Api, rdb: redis.Redis, body: dict,
                                            policy: str) -> None:
    assert api.create_session(**body)["settings"]["realtime"] == policy


def test_worker_progress_and_lease_show_up(api: Api, rdb: redis.Redis) -> None:
    sid = api.create_session()["id"]
    api.post_frames(sid, [api.frame(i) for i in range(3)])
    entries = rdb.xrange(frames_key(sid))
    # what a worker does after reconstructing the first two frames
    rdb.hincrby(counters_key(sid), Counter.RECONSTRUCTED.value, 2)
    rdb.hset(progress_key(sid), mapping={ProgressField.LAST_ID.value: entries[1][0],
                                                 ProgressField.LAST_SEQ.value: 1})
    rdb.set(lease_key(sid), encode_lease("worker-7", 3), px=10_000)
    time.sleep(0.05)  # the age of the first unprocessed frame grows past the others'
    with api.client() as c:
        before = _redis_ms(rdb)
        got = c.get(f"/v1/sessions/{sid}", headers=api.auth(SESSIONS_ADMIN)).json()
        after = _redis_ms(rdb)
    assert got["counters"]["reconstructed"] == 2
    # the lag counts from the first frame after the worker's last one (entries[2])
    assert got["lag"]["frames"] == 1
    assert _age(entries[2][0], before) <= got["lag"]["seconds"] <= _age(entries[2][0], after)
    assert got["worker"]["id"] == "worker-7" and got["worker"]["epoch"] == 3
    assert 0 < got["worker"]["lease_ttl_ms"] <= 10_000


def test_custom_settings_and_list(api: Api, rdb: redis.Redis) -> None:
    a = api.create_session(geometry="thorax-1x16", protocol="adjacent", grid=[8, 16, 16],
                           realtime="complete", reference={"mode": "first_n", "frames": 5},
                           patient_label="ICU-3 bed 7")
    assert a["n_measurements"] == 16 * 13  # adjacent drive, 3 pairs touch the driven ones
    assert a["grid"] == [8, 16, 16] and a["patient_label"] == "ICU-3 bed 7"
    b = api.create_session(geometry={"preset": "cylinder-2x16", "domain": {"kind": "cylinder",
                                                                          "radius": 0.15}})
    assert b["settings"]["geometry"]["domain"]["radius"] == 0.15
    with api.client() as c:
        listed = c.get("/v1/sessions", headers=api.auth(VOLUMES_READ)).json()["sessions"]
        assert [s["id"] for s in listed] == [b["id"], a["id"]]
        c.delete(f"/v1/sessions/{a['id']}", headers=api.auth(SESSIONS_ADMIN))
        only_open = c.get("/v1/sessions", params={"status": "open"},
                          headers=api.auth(SESSIONS_ADMIN)).json()["sessions"]
    assert [s["id"] for s in only_open] == [b["id"]]
    assert rdb.xlen(CONTROL_STREAM) == 1  # one entry per open session


@pytest.mark.parametrize(("body", "reason"), [
    ({"geometry": "no-such-belt"}, "invalid_geometry"),
    ({"geometry": "/etc/passwd"}, "invalid_geometry"),
    ({"geometry": {"electrodes": {"width": 0.2}}}, "invalid_geometry"),
    ({"protocol": "skip40"}, "invalid_protocol"),
    ({"protocol": {"kind": "explicit", "n_electrodes": 16, "injections": [],
                   "measurements": []}}, "invalid_protocol"),
    ({"grid": [16, 32]}, "invalid_grid"),
    ({"grid": [512, 512, 512]}, "invalid_grid"),
    ({"method": "magic"}, "invalid_request"),
    ({"realtime": "sometimes"}, "invalid_request"),
    ({"surprise": 1}, "invalid_request"),
    ({"reference": {"mode": "explicit", "voltages": [1.0, 2.0]}}, "wrong_length"),
])
def test_bad_specs_get_422_with_reason(api: Api, rdb: redis.Redis, body: dict,
                                       reason: str) -> None:
    with api.client() as c:
        r = c.post("/v1/sessions", json=body, headers=api.auth(SESSIONS_ADMIN))
    assert r.status_code == 422, r.text
    assert r.json()["error"]["reason"] == reason
    assert r.json()["error"]["detail"]
    assert rdb.zcard(SESSIONS_INDEX) == 0


def test_close_marks_closed_queues_close_and_expires(api: Api, rdb: redis.Redis) -> None:
    sid = api.create_session()["id"]
    api.post_frames(sid, [api.frame(0)])
    # a worker claims the session from the control stream
    claimed = rdb.xreadgroup(WORKER_GROUP, "worker-1", {CONTROL_STREAM: ">"})
    assert decode_control(claimed[0][1][0][1])[1] == sid
    with api.client() as c:
        r = c.delete(f"/v1/sessions/{sid}", headers=api.auth(SESSIONS_ADMIN))
        assert r.status_code == 200
        assert r.json()["status"] == "closed" and r.json()["expires_at"] > r.json()["closed_at"]
        again = c.delete(f"/v1/sessions/{sid}", headers=api.auth(SESSIONS_ADMIN))
        assert again.status_code == 200  # idempotent, no second close entry
        frames_r = api.post_frames(sid, [api.frame(1)])
        missing = c.delete(f"/v1/sessions/{'0' * 32}", headers=api.auth(SESSIONS_ADMIN))
    kinds = [decode_frame_entry(f).kind for _, f in rdb.xrange(frames_key(sid))]
    assert kinds == ["frame", "close"]
    assert 0 < rdb.ttl(session_key(sid)) <= api.settings.session_retention_s
    assert 0 < rdb.ttl(frames_key(sid)) <= api.settings.session_retention_s
    assert rdb.xlen(CONTROL_STREAM) == 0  # XLEN counts open sessions
    assert rdb.xpending(CONTROL_STREAM, WORKER_GROUP)["pending"] == 0
    assert frames_r.status_code == 409 and frames_r.json()["error"]["reason"] == "session_closed"
    assert missing.status_code == 404


def test_reference_put_validates_and_queues_in_band(api: Api, rdb: redis.Redis) -> None:
    sid = api.create_session()["id"]
    api.post_frames(sid, [api.frame(0)])
    ref = [0.02] * M_DEFAULT
    with api.client() as c:
        url = f"/v1/sessions/{sid}/reference"
        ok = c.put(url, json={"voltages": ref}, headers=api.auth(FRAMES_WRITE))
        short = c.put(url, json={"voltages": ref[:-1]}, headers=api.auth(SESSIONS_ADMIN))
        nan = c.put(url, content=json.dumps({"voltages": [float("nan")] + ref[1:]}),
                    headers={**api.auth(SESSIONS_ADMIN), "Content-Type": "application/json"})
        text = c.put(url, json={"voltages": ["a"] + ref[1:]}, headers=api.auth(SESSIONS_ADMIN))
        viewer = c.put(url, json={"voltages": ref}, headers=api.auth(VOLUMES_READ))
        info = c.get(f"/v1/sessions/{sid}", headers=api.auth(SESSIONS_ADMIN)).json()
    assert ok.status_code == 200 and ok.json() == {"reference_version": 1,
                                                   "n_measurements": M_DEFAULT}
    assert (short.status_code, short.json()["error"]["reason"]) == (422, "wrong_length")
    assert (nan.status_code, nan.json()["error"]["reason"]) == (422, "non_finite")
    assert (text.status_code, text.json()["error"]["reason"]) == (422, "non_numeric")
    assert viewer.status_code == 403
    assert info["reference_version"] == 1
    entries = [decode_frame_entry(f) for _, f in rdb.xrange(frames_key(sid))]
    assert [e.kind for e in entries] == ["frame", "reference"]
    np.testing.assert_allclose(entries[1].voltages, np.float32(0.02))


def test_explicit_reference_at_creation_comes_first(api: Api, rdb: redis.Redis) -> None:
    s = api.create_session(reference={"mode": "explicit", "voltages": [0.5] * M_DEFAULT})
    assert s["reference_version"] == 1
    assert s["settings"]["reference"] == {"mode": "explicit"}
    entries = rdb.xrange(frames_key(s["id"]))
    assert [decode_frame_entry(f).kind for _, f in entries] == ["reference"]
