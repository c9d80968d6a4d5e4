"""Sessions: create with defaults, inspect counters, list, close, reference, bad specs."""

from __future__ import annotations

import json
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import redis

from service import sessions
from service.contract.codecs import (
    SessionQuality,
    WarmupProgress,
    decode_control,
    decode_frame_entry,
    encode_lease,
    stream_id_ms,
)
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
                             "rejected": 0, "failures": 0, "rejected_by_reason": {},
                             "dropped": 0, "dropped_by_reason": {}}
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
    assert got["quality"] is None  # no report yet


WORKER_REPORTS = {
    # the live data-quality report
    ProgressField.QUALITY: (SessionQuality(
        bad_electrodes=[4, 11], usable_fraction=0.54, median_relative_noise=0.0021,
        flags={"4": ["noisy"], "11": ["few usable channels"]}, frames=64, seq=127,
        model_correlation=0.6, warnings=["the measured reference correlates only weakly"]),
        '{"bad_electrodes": "x"}'),
    # the main method's warm-start progress
    ProgressField.WARMUP: (WarmupProgress(step="D2IP warm start", done=720, total=1800,
                                          updated_at=1767225650.5), '{"step": "x"}'),
}


@pytest.mark.parametrize("field", list(WORKER_REPORTS), ids=lambda f: f.value)
def test_the_workers_reports_show_up(api: Api, rdb: redis.Redis, field: ProgressField) -> None:
    """A JSON report of the progress hash (what the worker writes) is the session's field of
    the same name (null before); a malformed one shows as null, never as an error."""
    report, malformed = WORKER_REPORTS[field]
    sid = api.create_session()["id"]

    def shown() -> Any:
        with api.client() as c:
            return c.get(f"/v1/sessions/{sid}",
                         headers=api.auth(VOLUMES_READ)).json()[field.value]

    assert shown() is None
    rdb.hset(progress_key(sid), field.value, report.to_json())
    assert shown() == report.__dict__
    if field is ProgressField.QUALITY:  # a worker without the reference check
        older = {k: v for k, v in report.__dict__.items()
                 if k not in ("model_correlation", "warnings")}
        rdb.hset(progress_key(sid), field.value, json.dumps(older))
        assert shown() == {**older, "model_correlation": None, "warnings": []}
    rdb.hset(progress_key(sid), field.value, malformed)
    assert shown() is None


def test_custom_settings_and_list(api: Api, rdb: redis.Redis) -> None:
    a = api.create_session(geometry="thorax-1x16", protocol="adjacent", grid=[8, 16, 16],
                           realtime="complete", reference={"mode": "first_n", "frames": 5},
                           patient_label="P-0042", bed="ICU-3 7")
    assert a["n_measurements"] == 16 * 13  # adjacent drive, 3 pairs touch the driven ones
    assert a["grid"] == [8, 16, 16] and a["patient_label"] == "P-0042"
    assert a["bed"] == "ICU-3 7"
    b = api.create_session(geometry={"preset": "cylinder-2x16", "domain": {"kind": "cylinder",
                                                                          "radius": 0.15}})
    assert b["settings"]["geometry"]["domain"]["radius"] == 0.15 and b["bed"] is None
    with api.client() as c:
        listed = c.get("/v1/sessions", headers=api.auth(VOLUMES_READ)).json()["sessions"]
        assert [s["id"] for s in listed] == [b["id"], a["id"]]
        c.delete(f"/v1/sessions/{a['id']}", headers=api.auth(SESSIONS_ADMIN))
        only_open = c.get("/v1/sessions", params={"status": "open"},
                          headers=api.auth(SESSIONS_ADMIN)).json()["sessions"]
    assert [s["id"] for s in only_open] == [b["id"]]
    assert rdb.xlen(CONTROL_STREAM) == 1  # one entry per open session


def test_belt_and_patient_build_the_thorax_and_are_recorded(api: Api, rdb: redis.Redis
                                                           ) -> None:
    """A clinical belt on a child's thorax: the belt's electrodes and protocol, the thorax
    scaled to the circumference, the position recorded for the clinical parameters."""
    from service.contract.geometry import outline_perimeter, resolve_geometry

    s = api.create_session(belt="goettingen-16", method="tikhonov", position="prone", patient={
        "age_group": "child", "chest_circumference": 0.62})
    assert s["n_electrodes"] == 16 and s["n_measurements"] == 208  # EIDORS adjacent
    settings = s["settings"]
    assert settings["belt"] == "goettingen-16" and settings["position"] == "prone"
    assert settings["patient"]["chest_circumference"] == 0.62
    assert settings["protocol"]["kind"] == "eidors" and settings["geometry_preset"] is None
    geometry = resolve_geometry(settings["geometry"])
    assert outline_perimeter(geometry.domain.outline(1024)) == pytest.approx(0.62, rel=2e-3)
    cfg = SessionConfig.from_json(rdb.hget(session_key(s["id"]), SessionField.CONFIG.value))
    assert (cfg.belt, cfg.position) == ("goettingen-16", "prone")
    # a patient alone: the default belt; a belt with its own protocol setting keeps that
    t = api.create_session(patient={"age_group": "neonate"})
    assert t["n_electrodes"] == 32 and t["settings"]["position"] == "supine"
    u = api.create_session(belt="sentec-32", protocol="skip4")
    assert u["n_measurements"] == 928 and u["settings"]["protocol_preset"] == "skip4"
    assert api.create_session(belt="sentec-32")["n_measurements"] == 736


@pytest.mark.parametrize(("body", "reason"), [
    ({"belt": "goettingen-16", "geometry": "thorax-1x16"}, "invalid_geometry"),
    ({"patient": {"age_group": "child"}, "geometry": {"preset": "thorax-1x16"}},
     "invalid_geometry"),
    ({"belt": "no-such-belt"}, "invalid_request"),
    ({"position": "upside-down"}, "invalid_request"),
    ({"patient": {"position": "prone"}}, "invalid_request"),
    ({"patient": {"width": 0.3}}, "invalid_request"),
    ({"patient": {"outline": [[0, 0], [1, 1], [1, 0], [0, 1], [0.5, 2], [0.2, 3], [0, 2],
                              [-1, 1]]}}, "invalid_geometry"),
    ({"patient": {"chest_circumference": 3.0}}, "invalid_request"),
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
    ({"bed": "ICU <3>"}, "invalid_request"),
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


@pytest.mark.parametrize(("body", "reason", "field"), [
    ({"geometry": {"mesh_size": 0.003}}, "invalid_geometry", "geometry.mesh_size"),
    ({"geometry": {"mesh_size": 1e-300}}, "invalid_geometry", "geometry.mesh_size"),
    ({"geometry": {"domain": {"kind": "thorax", "width": 1e6}}}, "invalid_geometry",
     "geometry.domain.width"),
    ({"geometry": {"domain": {"kind": "cylinder", "radius": 1e6, "height": 1e6},
                   "mesh_size": 1e5}}, "invalid_geometry", "geometry.domain.radius"),
    ({"geometry": {"electrodes": {"per_ring": 500, "width": 1e-4}}}, "invalid_geometry",
     "geometry.electrodes.per_ring"),
    ({"geometry": {"mesh_size": 0.0045}}, "model_too_large", "geometry.mesh_size"),
    ({"grid": [64, 64, 64], "geometry": {"mesh_size": 0.006}}, "model_too_large", "grid"),
])
def test_specs_beyond_the_limits_get_422_naming_the_field(
        api: Api, rdb: redis.Redis, body: dict, reason: str, field: str) -> None:
    with api.client() as c:
        r = c.post("/v1/sessions", json=body, headers=api.auth(SESSIONS_ADMIN))
    assert r.status_code == 422, r.text
    assert r.json()["error"]["reason"] == reason
    assert r.json()["error"]["detail"].startswith(f"{field}: "), r.json()
    assert rdb.zcard(SESSIONS_INDEX) == 0


def test_spec_validation_runs_off_the_event_loop(api: Api, monkeypatch: pytest.MonkeyPatch
                                                 ) -> None:
    """A slow validation (here an injected one) never stalls the API's other requests."""
    entered, release = threading.Event(), threading.Event()
    validate = sessions.resolve_config

    def slow(*args: Any) -> Any:
        entered.set()
        release.wait(30)
        return validate(*args)

    monkeypatch.setattr(sessions, "resolve_config", slow)
    created: list[int] = []

    def create() -> None:
        with api.client() as c:
            created.append(c.post("/v1/sessions", json={},
                                  headers=api.auth(SESSIONS_ADMIN)).status_code)

    creator = threading.Thread(target=create)
    creator.start()
    try:
        assert entered.wait(30), "the validation never started"
        with api.client() as c:  # answered while the validation is still running
            assert c.get("/healthz").status_code == 200
        assert not created
    finally:
        release.set()
        creator.join(30)
    assert created == [201]


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
        ok = c.put(url, json={"voltages": ref}, headers=api.auth(FRAMES_WRITE, sessions=[sid]))
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


def test_deeply_nested_json_is_400_invalid_json_everywhere(api: Api, rdb: redis.Redis) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000  # json raises RecursionError, not a decode error
    sid = api.create_session()["id"]
    headers = {**api.auth(SESSIONS_ADMIN), "Content-Type": "application/json"}
    with api.client() as c:
        answers = [c.post("/v1/sessions", content=b'{"geometry": ' + deep + b"}",
                          headers=headers),
                   c.put(f"/v1/sessions/{sid}/reference", content=deep, headers=headers)]
    for r in answers:
        assert r.status_code == 400, r.text
        assert r.json()["error"]["reason"] == "invalid_json"
    assert rdb.zcard(SESSIONS_INDEX) == 1


def test_a_large_list_pages_with_a_cursor_and_never_starves_frame_ingest(
        api: Api, rdb: redis.Redis) -> None:
    n = 130  # more sessions than the Redis client's pool has connections (100)
    sids = [api.create_session()["id"] for _ in range(n)]
    uploads: list[int] = []
    stop = threading.Event()

    def upload() -> None:  # another bed keeps sending frames while the list runs
        seq = 0
        while not stop.is_set():
            uploads.append(api.post_frames(sids[0], [api.frame(seq)]).status_code)
            seq += 1

    uploader = threading.Thread(target=upload)
    uploader.start()
    try:
        with api.client() as c:
            everything = c.get("/v1/sessions", params={"limit": 1000},
                               headers=api.auth(VOLUMES_READ))
            pages, cursor = [], None
            while True:
                r = c.get("/v1/sessions", params={"limit": 50, **({"cursor": cursor}
                                                                   if cursor else {})},
                          headers=api.auth(VOLUMES_READ))
                assert r.status_code == 200, r.text
                pages.append([s["id"] for s in r.json()["sessions"]])
                cursor = r.json()["next_cursor"]
                if len(pages) == 1:
                    newest = api.create_session()["id"]  # created between pages: not repeated
                if cursor is None:
                    break
            bad = c.get("/v1/sessions", params={"cursor": "nope"}, headers=api.auth(VOLUMES_READ))
    finally:
        stop.set()
        uploader.join()
    assert everything.status_code == 200, everything.text
    assert [s["id"] for s in everything.json()["sessions"]] == sids[::-1]
    assert everything.json()["next_cursor"] is None
    assert [len(p) for p in pages] == [50, 50, 30]
    assert [sid for page in pages for sid in page] == sids[::-1]
    assert newest not in pages[1] + pages[2]
    assert (bad.status_code, bad.json()["error"]["reason"]) == (422, "invalid_request")
    assert uploads and set(uploads) == {202}


def test_a_deleted_session_shows_why_it_closed(api: Api) -> None:
    sid = api.create_session()["id"]
    with api.client() as c:
        r = c.delete(f"/v1/sessions/{sid}", headers=api.auth(SESSIONS_ADMIN))
    assert r.json()["close_reason"] == "deleted"


@pytest.mark.parametrize("value", [0.0, 1e-12])
def test_an_all_zero_or_near_zero_reference_is_refused(api: Api, rdb: redis.Redis,
                                                       value: float) -> None:
    flat = [value] * M_DEFAULT
    with api.client() as c:
        created = c.post("/v1/sessions", json={"reference": {"mode": "explicit",
                                                              "voltages": flat}},
                         headers=api.auth(SESSIONS_ADMIN))
        sid = api.create_session()["id"]
        put = c.put(f"/v1/sessions/{sid}/reference", json={"voltages": flat},
                    headers=api.auth(SESSIONS_ADMIN))
    for r in (created, put):
        assert r.status_code == 422, r.text
        assert r.json()["error"]["reason"] == "zero_reference"
    assert rdb.zcard(SESSIONS_INDEX) == 1
    assert rdb.xlen(frames_key(sid)) == 0  # nothing queued
