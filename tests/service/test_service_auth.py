"""Auth on every endpoint: missing, expired, invalid and wrong-scope tokens; session-bound
device and viewer tokens, lifetimes, revocation, and the WebSocket Origin check."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import jwt
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from service.app import create_app
from service.contract.tokens import FRAMES_WRITE, SESSIONS_ADMIN, VOLUMES_READ, create_token
from tests.service.conftest import make_settings

if TYPE_CHECKING:
    from tests.service.conftest import Api, ServerThread

# (method, path template, a scope that is NOT enough)
ENDPOINTS = [
    ("POST", "/v1/sessions", FRAMES_WRITE),
    ("GET", "/v1/sessions", FRAMES_WRITE),
    ("GET", "/v1/sessions/{sid}", FRAMES_WRITE),
    ("DELETE", "/v1/sessions/{sid}", VOLUMES_READ),
    ("PUT", "/v1/sessions/{sid}/reference", VOLUMES_READ),
    ("POST", "/v1/sessions/{sid}/frames", SESSIONS_ADMIN),
]


def _bad_tokens(api: Api, wrong_scope: str, sid: str) -> dict[str, tuple[str | None, int, str]]:
    other = create_token("another-secret-0123456789abcdef0123456789", [SESSIONS_ADMIN], 600)
    unsigned = jwt.encode({"sub": "x", "scope": [SESSIONS_ADMIN, FRAMES_WRITE, VOLUMES_READ],
                           "iat": int(time.time()), "exp": int(time.time()) + 600,
                           "jti": "j"}, None, algorithm="none")
    return {
        "missing": (None, 401, "missing_token"),
        "expired": (api.token(now=time.time() - 3600, ttl=60), 401, "expired_token"),
        "other secret": (other, 401, "invalid_token"),
        "alg none": (unsigned, 401, "invalid_token"),
        "garbage": ("not-a-token", 401, "invalid_token"),
        "wrong scope": (api.token(wrong_scope, sessions=[sid]), 403, "insufficient_scope"),
    }


def _body(api: Api, method: str, path: str) -> dict[str, Any]:
    if path.endswith("/frames"):
        return {"json": {"frames": [api.frame(0)]}}
    if path.endswith("/reference"):
        return {"json": {"voltages": [0.1] * api.m_default}}
    return {"json": {}} if method == "POST" else {}


@pytest.mark.parametrize(("method", "template", "wrong_scope"), ENDPOINTS)
def test_http_endpoints_refuse_bad_tokens(api: Api, method: str, template: str,
                                          wrong_scope: str) -> None:
    sid = api.create_session()["id"]
    path = template.format(sid=sid)
    with api.client() as c:
        for case, (token, status, reason) in _bad_tokens(api, wrong_scope, sid).items():
            headers = {} if token is None else {"Authorization": f"Bearer {token}"}
            r = c.request(method, path, headers=headers, **_body(api, method, path))
            assert r.status_code == status, (case, r.text)
            assert r.json()["error"]["reason"] == reason, case
            if status == 401:
                assert r.headers["WWW-Authenticate"] == "Bearer"
        info = c.get(f"/v1/sessions/{sid}", headers=api.auth(SESSIONS_ADMIN)).json()
    assert info["status"] == "open" and info["counters"]["accepted"] == 0


def _ws_close_code(url: str, **kw: Any) -> tuple[int, str]:
    first = kw.pop("first", None)
    with connect(url, proxy=None, open_timeout=5, **kw) as ws:
        if first is not None:
            ws.send(first)
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=5)
    assert info.value.rcvd is not None
    return info.value.rcvd.code, info.value.rcvd.reason


def test_websocket_refuses_bad_tokens_with_1008(api: Api) -> None:
    sid = api.create_session()["id"]
    url = f"{api.ws_base}/v1/sessions/{sid}/stream"
    for case, (token, _, reason) in _bad_tokens(api, FRAMES_WRITE, sid).items():
        if token is None:
            continue
        assert _ws_close_code(url, subprotocols=["bearer", token]) == (1008, reason), case
        first = json.dumps({"token": token})
        assert _ws_close_code(url, first=first) == (1008, reason), case
    assert _ws_close_code(url, first="hello") == (1008, "missing_token")
    assert _ws_close_code(url, first=json.dumps({"token": 42})) == (1008, "missing_token")


def test_websocket_without_any_token_times_out_with_1008(api: Api) -> None:
    sid = api.create_session()["id"]
    url = f"{api.ws_base}/v1/sessions/{sid}/stream"
    start = time.monotonic()
    assert _ws_close_code(url) == (1008, "missing_token")
    assert time.monotonic() - start < api.settings.ws_auth_timeout_s + 2


def test_websocket_accepts_both_auth_styles(api: Api) -> None:
    sid = api.create_session()["id"]
    url = f"{api.ws_base}/v1/sessions/{sid}/stream"
    with connect(url, proxy=None, subprotocols=["bearer", api.token(VOLUMES_READ)]) as ws:
        assert ws.subprotocol == "bearer"
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.3)  # open, nothing published yet
    with connect(url, proxy=None) as ws:
        ws.send(json.dumps({"token": api.token(VOLUMES_READ)}))
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.3)
    assert _ws_close_code(f"{api.ws_base}/v1/sessions/{'a' * 32}/stream",
                          subprotocols=["bearer", api.token(VOLUMES_READ)]) == (
        4404, "session_not_found")


def test_websocket_closes_when_the_token_expires(api: Api) -> None:
    sid = api.create_session()["id"]
    url = f"{api.ws_base}/v1/sessions/{sid}/stream"
    # expires in 1 s, inside the decoder's 5 s leeway: accepted, then closed on expiry
    token = api.token(VOLUMES_READ, ttl=1)
    start = time.monotonic()
    assert _ws_close_code(url, subprotocols=["bearer", token]) == (1008, "expired_token")
    assert time.monotonic() - start < 4


def _raw_token(api: Api, **claims: Any) -> str:
    """A token signed with the API's secret, with claims `create_token` would refuse."""
    now = int(time.time())
    base = {"sub": "x", "scope": [FRAMES_WRITE], "iat": now, "exp": now + 600, "jti": "j1"}
    return jwt.encode({k: v for k, v in {**base, **claims}.items() if v is not None},
                      api.settings.secret, algorithm="HS256")


def test_a_device_token_writes_only_its_own_session(api: Api) -> None:
    mine, other = api.create_session()["id"], api.create_session()["id"]
    device = {"Authorization": f"Bearer {api.token(FRAMES_WRITE, sessions=[mine])}"}
    unbound = {"Authorization": f"Bearer {_raw_token(api)}"}
    frames = {"frames": [api.frame(0)]}
    with api.client() as c:
        assert c.post(f"/v1/sessions/{mine}/frames", json=frames,
                      headers=device).status_code == 202
        for headers, reason in ((device, "session_not_permitted"), (unbound, "unbound_token")):
            r = c.post(f"/v1/sessions/{other}/frames", json=frames, headers=headers)
            assert r.status_code == 403 and r.json()["error"]["reason"] == reason, r.text
            r = c.put(f"/v1/sessions/{other}/reference", headers=headers,
                      json={"voltages": [0.1] * api.m_default})
            assert r.status_code == 403 and r.json()["error"]["reason"] == reason, r.text
        info = c.get(f"/v1/sessions/{other}", headers=api.auth(SESSIONS_ADMIN)).json()
    assert info["last_seq"] is None and info["counters"]["accepted"] == 0
    with pytest.raises(ValueError, match="exactly one session"):
        api.token(FRAMES_WRITE)


def test_a_viewer_token_sees_only_its_sessions(api: Api) -> None:
    mine = api.create_session(patient_label="bed-1")["id"]
    other = api.create_session(patient_label="bed-2")["id"]
    viewer = {"Authorization": f"Bearer {api.token(VOLUMES_READ, sessions=[mine])}"}
    with api.client() as c:
        listed = c.get("/v1/sessions", headers=viewer)
        assert listed.status_code == 200
        assert [s["id"] for s in listed.json()["sessions"]] == [mine]
        assert "bed-2" not in listed.text and other not in listed.text
        assert c.get(f"/v1/sessions/{mine}", headers=viewer).json()["patient_label"] == "bed-1"
        r = c.get(f"/v1/sessions/{other}", headers=viewer)
        assert r.status_code == 403 and r.json()["error"]["reason"] == "session_not_permitted"
        everyone = c.get("/v1/sessions", headers=api.auth(VOLUMES_READ)).json()["sessions"]
    assert {mine, other} <= {s["id"] for s in everyone}
    token = viewer["Authorization"].split()[1]
    assert _ws_close_code(f"{api.ws_base}/v1/sessions/{other}/stream",
                          subprotocols=["bearer", token]) == (1008, "session_not_permitted")
    with connect(f"{api.ws_base}/v1/sessions/{mine}/stream", proxy=None,
                 subprotocols=["bearer", token]) as ws:
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.3)


def test_token_lifetimes_are_bounded(api: Api) -> None:
    sid = api.create_session()["id"]
    longest = 7 * 86_400  # EITMON_TOKEN_MAX_TTL_S's default
    now = int(time.time())
    cases = {"too long": api.token(VOLUMES_READ, ttl=longest + 60),
             "no exp": _raw_token(api, scope=[VOLUMES_READ], exp=None),
             "exp far ahead of a future iat": _raw_token(api, scope=[VOLUMES_READ],
                                                         iat=now + longest,
                                                         exp=now + longest + 60)}
    with api.client() as c:
        for case, token in cases.items():
            r = c.get(f"/v1/sessions/{sid}", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 401, case
            assert r.json()["error"]["reason"] == "invalid_token", case
        ok = c.get(f"/v1/sessions/{sid}", headers=api.auth(VOLUMES_READ))
    assert ok.status_code == 200


def test_a_revoked_token_is_refused_and_its_websocket_closed(api: Api, redis_url: str) -> None:
    from typer.testing import CliRunner

    from service.cli import app

    sid = api.create_session()["id"]
    token = api.token(VOLUMES_READ)
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    url = f"{api.ws_base}/v1/sessions/{sid}/stream"
    with api.client() as c, connect(url, proxy=None, subprotocols=["bearer", token]) as ws:
        assert c.get(f"/v1/sessions/{sid}",
                     headers={"Authorization": f"Bearer {token}"}).status_code == 200
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.3)  # open
        env = {"REDIS_URL": redis_url, "EITMON_JWT_SECRET": api.settings.secret}
        result = CliRunner().invoke(app, ["token", "revoke", jti], env=env)
        assert result.exit_code == 0, result.output
        r = c.get(f"/v1/sessions/{sid}", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401 and r.json()["error"]["reason"] == "revoked_token"
        # closed within revocation_check_s (0.5 s here); the timeout only guards a hang
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=60)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "revoked_token")
    assert _ws_close_code(url, subprotocols=["bearer", token]) == (1008, "revoked_token")
    other = api.token(VOLUMES_READ)  # other tokens are not affected
    assert _get(api, f"/v1/sessions/{sid}", other).status_code == 200


def _get(api: Api, path: str, token: str) -> Any:
    with api.client() as c:
        return c.get(path, headers={"Authorization": f"Bearer {token}"})


def test_websocket_refuses_a_foreign_origin(api: Api, serve: type[ServerThread]) -> None:
    sid = api.create_session()["id"]
    token = api.token(VOLUMES_READ)
    path = f"/v1/sessions/{sid}/stream"
    with pytest.raises(InvalidStatus) as refused:
        connect(f"{api.ws_base}{path}", proxy=None, origin="https://evil.example",
                subprotocols=["bearer", token])
    assert refused.value.response.status_code == 403
    own = api.base  # the page the API itself serves (/viewer)
    with connect(f"{api.ws_base}{path}", proxy=None, origin=own,
                 subprotocols=["bearer", token]) as ws:
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.3)
    settings = make_settings(api.settings.redis_url, allowed_origins="https://central.example")
    with serve(create_app(settings)) as server:
        ws_base = f"ws://127.0.0.1:{server.port}"
        with connect(f"{ws_base}{path}", proxy=None, origin="https://central.example",
                     subprotocols=["bearer", token]) as ws:
            with pytest.raises(TimeoutError):
                ws.recv(timeout=0.3)
        with pytest.raises(InvalidStatus):
            connect(f"{ws_base}{path}", proxy=None, origin="https://evil.example",
                    subprotocols=["bearer", token])
