"""Auth on every endpoint: missing, expired, invalid and wrong-scope tokens."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import jwt
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from service.contract.tokens import FRAMES_WRITE, SESSIONS_ADMIN, VOLUMES_READ, create_token

if TYPE_CHECKING:
    from tests.service.conftest import Api

# (method, path template, a scope that is NOT enough)
ENDPOINTS = [
    ("POST", "/v1/sessions", FRAMES_WRITE),
    ("GET", "/v1/sessions", FRAMES_WRITE),
    ("GET", "/v1/sessions/{sid}", FRAMES_WRITE),
    ("DELETE", "/v1/sessions/{sid}", VOLUMES_READ),
    ("PUT", "/v1/sessions/{sid}/reference", VOLUMES_READ),
    ("POST", "/v1/sessions/{sid}/frames", SESSIONS_ADMIN),
]


def _bad_tokens(api: Api, wrong_scope: str) -> dict[str, tuple[str | None, int, str]]:
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
        "wrong scope": (api.token(wrong_scope), 403, "insufficient_scope"),
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
        for case, (token, status, reason) in _bad_tokens(api, wrong_scope).items():
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
    for case, (token, _, reason) in _bad_tokens(api, FRAMES_WRITE).items():
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
