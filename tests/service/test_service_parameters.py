"""Per-breath parameters: `GET /v1/sessions/{id}/parameters` and the viewers' `parameters`
message, fed by entries written with the contract's codec (as the worker writes them)."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import redis

from service.contract.codecs import ParametersEntry, encode_parameters
from service.contract.keys import PARAMETERS_MAXLEN, parameters_key, session_keys
from service.contract.tokens import FRAMES_WRITE, VOLUMES_READ
from tests.service.test_service_stream import publish, receive_pair, viewer

if TYPE_CHECKING:
    from tests.service.conftest import Api


def breath(index: int) -> dict[str, Any]:
    return {"index": index, "start_s": 4.4 * index, "end_inspiration_s": 4.4 * index + 2.0,
            "end_s": 4.4 * index + 4.4, "seq": {"start": 88 * index, "end": 88 * index + 88},
            "preview": {"method": "tikhonov", "tiv": 40.0 + index, "rvd_spread_pct": None},
            "tidal": {"method": "d2ip", "left_pct": 48.5}}


def write(rdb: redis.Redis, sid: str, index: int) -> str:
    """XADD one breath's parameters exactly as the worker does (encode_parameters)."""
    entry = ParametersEntry(seq=88 * index + 88, breath=breath(index), worker="w1", epoch=2)
    return rdb.xadd(parameters_key(sid), encode_parameters(entry), maxlen=PARAMETERS_MAXLEN,
                    approximate=True).decode()


def get(api: Api, sid: str, *scopes: str, **params: Any) -> Any:
    with api.client() as c:
        return c.get(f"/v1/sessions/{sid}/parameters", params=params,
                     headers=api.auth(*(scopes or (VOLUMES_READ,))))


def test_parameters_are_paged_by_stream_id(api: Api, rdb: redis.Redis) -> None:
    sid = api.create_session()["id"]
    assert get(api, sid).json() == {"entries": [], "next": None}
    ids = [write(rdb, sid, k) for k in range(5)]
    first = get(api, sid, limit=2)
    assert first.status_code == 200, first.text
    page = first.json()
    assert [e["id"] for e in page["entries"]] == ids[:2] and page["next"] == ids[1]
    assert page["entries"][0] == {"id": ids[0], "seq": 88, "worker": "w1", "epoch": 2,
                                  "breath": breath(0)}
    rest = get(api, sid, since=page["next"], limit=10).json()
    assert [e["breath"]["index"] for e in rest["entries"]] == [2, 3, 4]
    assert rest["next"] is None


def test_parameters_errors(api: Api, rdb: redis.Redis) -> None:
    sid = api.create_session()["id"]
    assert get(api, "0" * 32).status_code == 404
    assert get(api, sid, since="yesterday").json()["error"]["reason"] == "invalid_request"
    assert get(api, sid, limit=0).status_code == 422
    with api.client() as c:  # a device token of the session cannot read its parameters
        assert c.get(f"/v1/sessions/{sid}/parameters",
                     headers=api.auth(FRAMES_WRITE, sessions=[sid])).status_code == 403
    other = api.create_session()["id"]  # a viewer token of another session cannot either
    with api.client() as c:
        assert c.get(f"/v1/sessions/{sid}/parameters",
                     headers=api.auth(VOLUMES_READ, sessions=[other])).status_code == 403
    with api.client() as c:
        assert c.get(f"/v1/sessions/{sid}/parameters").status_code == 401


def test_parameters_stream_expires_with_the_session(api: Api, rdb: redis.Redis) -> None:
    sid = api.create_session()["id"]
    write(rdb, sid, 0)
    assert parameters_key(sid) in session_keys(sid)
    with api.client() as c:
        assert c.delete(f"/v1/sessions/{sid}", headers=api.auth()).status_code == 200
    assert rdb.ttl(parameters_key(sid)) > 0


def test_viewer_gets_a_parameters_message_per_breath(api: Api, rdb: redis.Redis) -> None:
    sid = api.create_session()["id"]
    write(rdb, sid, 0)  # before the viewer: not sent
    with viewer(api, sid) as ws:
        time.sleep(0.2)  # the reader is waiting on XREAD
        entry_id = write(rdb, sid, 1)
        message = json.loads(ws.recv(timeout=5))
        publish(rdb, sid, 9, kind="tidal")  # volumes still come as pairs after it
        meta, _ = receive_pair(ws)
    assert message == {"type": "parameters", "session": sid, "id": entry_id, "seq": 176,
                       "breath": breath(1)}
    assert meta["type"] == "volume" and meta["kind"] == "tidal"
