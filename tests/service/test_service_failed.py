"""A session that a worker marked `failed` (status, failure_reason, the failures counter),
written straight into the real valkey as the worker writes it: the API shows it, refuses its
frames and references, and its viewers are told and disconnected."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import redis
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from service.contract.fields import Counter, SessionField, SessionStatus
from service.contract.keys import counters_key, frames_key, session_key
from service.contract.tokens import FRAMES_WRITE, SESSIONS_ADMIN, VOLUMES_READ
from tests.service.test_service_stream import publish, receive_pair, viewer

if TYPE_CHECKING:
    from tests.service.conftest import Api

REASON = "reconstruction failed 3 times: RuntimeError"


def mark_failed(rdb: redis.Redis, sid: str) -> None:
    """What a worker writes when it gives up on a session."""
    rdb.hset(session_key(sid), mapping={SessionField.STATUS.value: SessionStatus.FAILED.value,
                                        SessionField.FAILURE_REASON.value: REASON})
    rdb.hincrby(counters_key(sid), Counter.FAILURES.value, 3)


def expect_status_then_close(ws: ClientConnection, sid: str) -> None:
    message = ws.recv(timeout=10)
    assert isinstance(message, str)
    assert json.loads(message) == {"type": "status", "session": sid, "status": "failed",
                                   "reason": REASON}
    try:
        ws.recv(timeout=5)
        raise AssertionError("the server kept the socket open")
    except ConnectionClosed as e:
        assert e.rcvd is not None
        assert (e.rcvd.code, e.rcvd.reason) == (1000, "session_failed")


def test_get_shows_the_failure(api: Api, rdb: redis.Redis) -> None:
    sid = api.create_session()["id"]
    mark_failed(rdb, sid)
    with api.client() as c:
        info = c.get(f"/v1/sessions/{sid}", headers=api.auth(VOLUMES_READ)).json()
        listed = c.get("/v1/sessions", params={"status": "failed"},
                       headers=api.auth(SESSIONS_ADMIN)).json()["sessions"]
        open_ids = [s["id"] for s in c.get("/v1/sessions", params={"status": "open"},
                                           headers=api.auth(SESSIONS_ADMIN)).json()["sessions"]]
    assert info["status"] == "failed" and info["failure_reason"] == REASON
    assert info["counters"]["failures"] == 3
    assert [s["id"] for s in listed] == [sid] and sid not in open_ids


def test_frames_and_references_are_refused(api: Api, rdb: redis.Redis) -> None:
    sid = api.create_session()["id"]
    assert api.post_frames(sid, [api.frame(0)]).status_code == 202
    mark_failed(rdb, sid)
    r = api.post_frames(sid, [api.frame(1)])
    assert r.status_code == 409 and r.json()["error"]["reason"] == "session_failed"
    with api.client() as c:
        r = c.put(f"/v1/sessions/{sid}/reference", json={"voltages": [0.0] * 928},
                  headers=api.auth(FRAMES_WRITE, sessions=[sid]))
        counters = c.get(f"/v1/sessions/{sid}", headers=api.auth(VOLUMES_READ)).json()[
            "counters"]
    assert r.status_code == 409 and r.json()["error"]["reason"] == "session_failed"
    assert rdb.xlen(frames_key(sid)) == 1  # only the frame accepted before the failure
    assert counters["accepted"] == 1
    assert counters["rejected_by_reason"] == {"session_failed": 1}


def test_closing_a_failed_session_keeps_its_status(api: Api, rdb: redis.Redis) -> None:
    sid = api.create_session()["id"]
    mark_failed(rdb, sid)
    with api.client() as c:
        first = c.delete(f"/v1/sessions/{sid}", headers=api.auth(SESSIONS_ADMIN)).json()
        again = c.delete(f"/v1/sessions/{sid}", headers=api.auth(SESSIONS_ADMIN)).json()
    assert first["status"] == "failed" and first["failure_reason"] == REASON
    assert first["closed_at"] is not None and first["expires_at"] is not None
    assert again["closed_at"] == first["closed_at"]  # idempotent
    assert 0 < rdb.ttl(session_key(sid)) <= api.settings.session_retention_s


def test_viewers_are_told_when_the_session_fails(api: Api, rdb: redis.Redis) -> None:
    sid = api.create_session()["id"]
    with viewer(api, sid) as ws:
        time.sleep(0.2)  # the reader is waiting on XREAD
        publish(rdb, sid, 0)
        assert receive_pair(ws)[0]["seq"] == 0
        mark_failed(rdb, sid)
        expect_status_then_close(ws, sid)


def test_viewers_of_a_failed_session_are_told_at_once(api: Api, rdb: redis.Redis) -> None:
    sid = api.create_session()["id"]
    mark_failed(rdb, sid)
    with viewer(api, sid) as ws:
        expect_status_then_close(ws, sid)
