"""Frames: JSON and binary bodies, every bad-input class, duplicates, atomic concurrency."""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import redis
from prometheus_client import REGISTRY

from service.app import create_app
from service.contract.codecs import FrameEntry, decode_frame_entry
from service.contract.keys import frames_key
from service.contract.tokens import FRAMES_WRITE, SESSIONS_ADMIN
from tests.service.conftest import Api, make_settings

if TYPE_CHECKING:
    from tests.service.conftest import ServerThread

M = 928


def _queued(rdb: redis.Redis, sid: str) -> list[FrameEntry]:
    return [decode_frame_entry(f) for _, f in rdb.xrange(frames_key(sid))]


def _counters(api: Api, sid: str) -> dict[str, Any]:
    with api.client() as c:
        return c.get(f"/v1/sessions/{sid}", headers=api.auth(SESSIONS_ADMIN)).json()["counters"]


def _post_raw(api: Api, sid: str, content: bytes, content_type: str = "application/json",
              **headers: str) -> Any:
    with api.client() as c:
        return c.post(f"/v1/sessions/{sid}/frames", content=content,
                      headers={**api.auth(FRAMES_WRITE, sessions=[sid]),
                               "Content-Type": content_type, **headers})


def _binary_headers(count: int, seq0: int = 0, t0: float = 1.0, dt: float = 0.025
                    ) -> dict[str, str]:
    return {"X-Frame-Count": str(count), "X-Seq-Start": str(seq0),
            "X-Timestamp-Start": repr(t0), "X-Frame-Interval": repr(dt)}


def test_json_frames_are_queued_in_order(api: Api, rdb: redis.Redis) -> None:
    sid = api.create_session()["id"]
    r = api.post_frames(sid, [api.frame(0), api.frame(1, ts=0.5)])
    assert r.status_code == 202
    assert r.json() == {"accepted": 2, "duplicates": [], "last_seq": 1, "lag_frames": 2}
    q = _queued(rdb, sid)
    assert [(e.kind, e.seq, e.timestamp) for e in q] == [("frame", 0, 0.0), ("frame", 1, 0.5)]
    np.testing.assert_allclose(q[1].voltages, np.float32(api.frame(1)["voltages"]))


def test_binary_body_is_accepted(api: Api, rdb: redis.Redis) -> None:
    sid = api.create_session()["id"]
    volts = np.arange(3 * M, dtype="<f4").reshape(3, M) * 1e-3
    r = _post_raw(api, sid, volts.tobytes(), "application/octet-stream",
                  **_binary_headers(3, seq0=10, t0=2.0, dt=0.05))
    assert r.status_code == 202, r.text
    assert r.json()["accepted"] == 3 and r.json()["last_seq"] == 12
    q = _queued(rdb, sid)
    assert [e.seq for e in q] == [10, 11, 12]
    assert [e.timestamp for e in q] == pytest.approx([2.0, 2.05, 2.1])
    np.testing.assert_array_equal(np.stack([e.voltages for e in q]), volts)


NAN_JSON = (b'{"frames": [{"seq": 0, "timestamp": 0.0, "voltages": [NaN' + b", 0.1" * (M - 1)
            + b"]}]}")
DEEP_JSON = b'{"frames": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"  # RecursionError in json
INF_JSON = (b'{"frames": [{"seq": 0, "timestamp": 0.0, "voltages": [0.1' + b", 0.1" * (M - 2)
            + b", -Infinity]}]}")


def _bad_json_cases(api: Api) -> dict[str, tuple[bytes, int, str]]:
    def doc(*frames: dict[str, Any]) -> bytes:
        return json.dumps({"frames": list(frames)}).encode()

    good = api.frame(5)
    return {
        "wrong length": (doc(good, {**api.frame(6), "voltages": [0.1] * (M - 1)}), 422,
                         "wrong_length"),
        "NaN token": (NAN_JSON, 422, "non_finite"),
        "Infinity token": (INF_JSON, 422, "non_finite"),
        "float32 overflow": (doc({**good, "voltages": [1e39] * M}), 422, "non_finite"),
        "string value": (doc({**good, "voltages": ["0.1"] * M}), 422, "non_numeric"),
        "bool value": (doc({**good, "voltages": [True] * M}), 422, "non_numeric"),
        "null value": (doc({**good, "voltages": [None] * M}), 422, "non_numeric"),
        "voltages not a list": (doc({**good, "voltages": "0.1"}), 422, "non_numeric"),
        "timestamp string": (doc({**good, "timestamp": "now"}), 422, "non_numeric"),
        "negative seq": (doc({**good, "seq": -1}), 422, "invalid_seq"),
        "float seq": (doc({**good, "seq": 1.5}), 422, "invalid_seq"),
        "decreasing seq": (doc(api.frame(7), api.frame(6)), 422, "seq_not_increasing"),
        "missing key": (doc({"seq": 1, "voltages": good["voltages"]}), 422, "malformed_body"),
        "not frames": (b'{"frame": []}', 422, "malformed_body"),
        "empty batch": (b'{"frames": []}', 422, "empty_batch"),
        "too many frames": (doc(*(api.frame(i) for i in range(17))), 413, "batch_too_large"),
        "not json": (b"{frames", 400, "invalid_json"),
        "deeply nested": (DEEP_JSON, 400, "invalid_json"),
    }


@pytest.mark.parametrize("case", [
    "wrong length", "NaN token", "Infinity token", "float32 overflow", "string value",
    "bool value", "null value", "voltages not a list", "timestamp string", "negative seq",
    "float seq", "decreasing seq", "missing key", "not frames", "empty batch",
    "too many frames", "not json", "deeply nested"])
def test_bad_json_is_rejected_whole_and_counted(api: Api, rdb: redis.Redis, case: str) -> None:
    sid = api.create_session()["id"]
    body, status, reason = _bad_json_cases(api)[case]
    r = _post_raw(api, sid, body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["reason"] == reason
    assert r.json()["error"]["detail"]
    assert _queued(rdb, sid) == []
    counters = _counters(api, sid)
    assert counters["accepted"] == 0
    assert counters["rejected"] == 1 and counters["rejected_by_reason"] == {reason: 1}


@pytest.mark.parametrize(("mutate", "status", "reason"), [
    ("nan", 422, "non_finite"),
    ("inf", 422, "non_finite"),
    ("short body", 422, "wrong_length"),
    ("float64 body", 422, "wrong_length"),
    ("no seq header", 400, "invalid_header"),
    ("bad interval", 400, "invalid_header"),
    ("infinite timestamps", 422, "non_finite"),
    ("text/plain", 415, "unsupported_media_type"),
])
def test_bad_binary_is_rejected(api: Api, rdb: redis.Redis, mutate: str, status: int,
                                reason: str) -> None:
    sid = api.create_session()["id"]
    volts = np.full((2, M), 0.01, dtype="<f4")
    headers = _binary_headers(2)
    ctype = "application/octet-stream"
    if mutate == "nan":
        volts[1, 17] = np.nan
    elif mutate == "inf":
        volts[0, 0] = np.inf
    body = volts.tobytes()
    if mutate == "short body":
        body = body[:-4]
    elif mutate == "float64 body":
        body = volts.astype("<f8").tobytes()
    elif mutate == "no seq header":
        del headers["X-Seq-Start"]
    elif mutate == "bad interval":
        headers["X-Frame-Interval"] = "nan"
    elif mutate == "infinite timestamps":  # each finite, but t0 + dt overflows to inf
        headers["X-Timestamp-Start"] = headers["X-Frame-Interval"] = "1e308"
    elif mutate == "text/plain":
        ctype = "text/plain"
    r = _post_raw(api, sid, body, ctype, **headers)
    assert r.status_code == status, r.text
    assert r.json()["error"]["reason"] == reason
    assert _queued(rdb, sid) == []


def test_oversized_body_gets_413_and_queues_nothing(api: Api, rdb: redis.Redis) -> None:
    sid = api.create_session()["id"]
    big = b" " * (api.settings.max_body_bytes + 1)
    r = _post_raw(api, sid, big)
    assert r.status_code == 413 and r.json()["error"]["reason"] == "body_too_large"

    def chunks() -> Any:  # no Content-Length: the limit holds while streaming too
        for _ in range(api.settings.max_body_bytes // 65536 + 2):
            yield b" " * 65536

    with api.client() as c:
        r2 = c.post(f"/v1/sessions/{sid}/frames", content=chunks(),
                    headers={**api.auth(FRAMES_WRITE, sessions=[sid]),
                             "Content-Type": "application/json"})
    assert r2.status_code == 413 and r2.json()["error"]["reason"] == "body_too_large"
    assert _queued(rdb, sid) == []
    assert _counters(api, sid)["rejected_by_reason"] == {"body_too_large": 2}


def test_unknown_and_closed_sessions(api: Api, rdb: redis.Redis) -> None:
    r = api.post_frames("f" * 32, [api.frame(0)])
    assert r.status_code == 404 and r.json()["error"]["reason"] == "session_not_found"
    with api.client() as c:  # no token can be bound to a malformed id: an admin's
        r = c.post("/v1/sessions/not-an-id/frames", json={"frames": [api.frame(0)]},
                   headers=api.auth(SESSIONS_ADMIN, FRAMES_WRITE))
    assert r.status_code == 404
    sid = api.create_session()["id"]
    with api.client() as c:
        c.delete(f"/v1/sessions/{sid}", headers=api.auth(SESSIONS_ADMIN))
    r = api.post_frames(sid, [api.frame(0)])
    assert r.status_code == 409 and r.json()["error"]["reason"] == "session_closed"
    assert [e.kind for e in _queued(rdb, sid)] == ["close"]
    assert _counters(api, sid)["rejected_by_reason"] == {"session_closed": 1}


def test_duplicates_are_acknowledged_not_queued_twice(api: Api, rdb: redis.Redis) -> None:
    sid = api.create_session()["id"]
    assert api.post_frames(sid, [api.frame(0), api.frame(1), api.frame(2)]).status_code == 202
    # a retried, overlapping batch, with a repeat inside the batch too
    r = api.post_frames(sid, [api.frame(1), api.frame(2), api.frame(3), api.frame(3)])
    assert r.status_code == 202
    assert r.json() == {"accepted": 1, "duplicates": [1, 2, 3], "last_seq": 3,
                        "lag_frames": 4}
    r = api.post_frames(sid, [api.frame(3)])
    assert r.json()["accepted"] == 0 and r.json()["duplicates"] == [3]
    assert [e.seq for e in _queued(rdb, sid)] == [0, 1, 2, 3]
    counters = _counters(api, sid)
    assert counters["accepted"] == 4 and counters["duplicate"] == 4
    assert counters["rejected"] == 0


def _post_all_at_once(api: Api, sid: str, batches: list[list[dict[str, Any]]]) -> list[Any]:
    results: list[Any] = []
    barrier = threading.Barrier(len(batches))

    def post(batch: list[dict[str, Any]]) -> None:
        barrier.wait()
        results.append(api.post_frames(sid, batch))

    threads = [threading.Thread(target=post, args=(b,)) for b in batches]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.status_code == 202 for r in results)
    return [r.json() for r in results]


def test_concurrent_retries_queue_each_frame_once(api: Api, rdb: redis.Redis) -> None:
    sid = api.create_session()["id"]
    batch = [api.frame(s) for s in range(6)]
    acks = _post_all_at_once(api, sid, [batch] * 8)
    assert sum(a["accepted"] for a in acks) == 6
    assert sorted(a["accepted"] + len(a["duplicates"]) for a in acks) == [6] * 8
    assert [e.seq for e in _queued(rdb, sid)] == list(range(6))
    counters = _counters(api, sid)
    assert counters["accepted"] == 6 and counters["duplicate"] == 42


def test_concurrent_overlapping_posts_keep_the_stream_strictly_increasing(
        api: Api, rdb: redis.Redis) -> None:
    sid = api.create_session()["id"]
    starts = (0, 2, 4, 0, 3, 1, 5, 2)
    acks = _post_all_at_once(api, sid, [[api.frame(s) for s in range(a, a + 6)]
                                        for a in starts])
    seqs = [e.seq for e in _queued(rdb, sid)]
    assert seqs == sorted(set(seqs))  # no seq queued twice, never out of order
    assert seqs[-1] == 10
    assert sum(a["accepted"] for a in acks) == len(seqs) == _counters(api, sid)["accepted"]


def test_a_seq_far_ahead_is_refused_not_a_new_high_water_mark(api: Api, rdb: redis.Redis
                                                              ) -> None:
    sid = api.create_session()["id"]
    assert api.post_frames(sid, [api.frame(0)]).status_code == 202
    body = np.zeros(M, "<f4").tobytes()
    r = _post_raw(api, sid, body, "application/octet-stream",
                  **_binary_headers(1, seq0=9007199254740990))
    assert r.status_code == 422 and r.json()["error"]["reason"] == "seq_too_far_ahead"
    window = api.settings.seq_window
    r = api.post_frames(sid, [api.frame(1), api.frame(window + 2)])  # the second jumps too far
    assert r.status_code == 422
    ack = api.post_frames(sid, [api.frame(1), api.frame(window + 1)])  # exactly the window
    assert ack.status_code == 202 and ack.json()["duplicates"] == []
    assert [f.seq for f in _queued(rdb, sid)] == [0, 1, window + 1]
    assert _counters(api, sid)["rejected_by_reason"] == {"seq_too_far_ahead": 2}


def test_a_full_redis_answers_503_redis_full_and_counts_it(api: Api, rdb: redis.Redis) -> None:
    sid = api.create_session()["id"]
    full_before = REGISTRY.get_sample_value("eitmon_redis_full_total") or 0
    maxmemory = rdb.config_get("maxmemory")["maxmemory"]
    rdb.config_set("maxmemory", 1)  # every write is refused with OOM (policy noeviction)
    try:
        r = api.post_frames(sid, [api.frame(0)])
    finally:
        rdb.config_set("maxmemory", maxmemory)
    assert r.status_code == 503, r.text
    assert r.json()["error"]["reason"] == "redis_full"
    assert int(r.headers["Retry-After"]) > 0
    assert REGISTRY.get_sample_value("eitmon_redis_full_total") == full_before + 1
    assert api.post_frames(sid, [api.frame(0)]).status_code == 202


def test_a_backlog_no_worker_processes_is_bounded_with_429(
        serve: type[ServerThread], redis_url: str, rdb: redis.Redis) -> None:
    settings = make_settings(redis_url, max_backlog_frames=20)
    with serve(create_app(settings)) as server:
        bounded = Api(f"http://127.0.0.1:{server.port}", settings)
        sid = bounded.create_session()["id"]
        for first in (0, 10):
            batch = [bounded.frame(i) for i in range(first, first + 10)]
            assert bounded.post_frames(sid, batch).status_code == 202
        r = bounded.post_frames(sid, [bounded.frame(20)])
        retry = bounded.post_frames(sid, [bounded.frame(5)])  # a duplicate is still answered
        counters = _counters(bounded, sid)
    assert r.status_code == 429, r.text
    assert r.json()["error"]["reason"] == "backlog_full" and int(r.headers["Retry-After"]) > 0
    assert retry.status_code == 202 and retry.json()["duplicates"] == [5]
    assert rdb.xlen(frames_key(sid)) == 20
    assert counters["accepted"] == 20 and counters["rejected_by_reason"] == {"backlog_full": 1}


def test_a_huge_body_gets_its_413_and_the_connection_stays_usable(api: Api) -> None:
    """The client sees the 413 (not "server disconnected") even when the body is far larger
    than the socket buffers and the answer comes before the body is read."""
    sid = api.create_session()["id"]
    size = 32 * 1024 * 1024

    def chunks() -> Any:
        for _ in range(size // 65536):
            yield b" " * 65536

    with api.client() as c:
        for url in (f"/v1/sessions/{sid}/frames", "/v1/sessions"):
            for content in (b" " * size, chunks()):  # announced length, then chunked
                r = c.post(url, content=content, headers={
                    **api.auth(FRAMES_WRITE, SESSIONS_ADMIN), "Content-Type": "application/json"})
                assert r.status_code == 413, r.text
                assert r.json()["error"]["reason"] == "body_too_large"
        ok = c.post(f"/v1/sessions/{sid}/frames", json={"frames": [api.frame(0)]},
                    headers=api.auth(FRAMES_WRITE, sessions=[sid]))
    assert ok.status_code == 202, ok.text
