"""Health, readiness, Prometheus metrics and the OpenAPI document."""

from __future__ import annotations

import re
import socket
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import redis
from websockets.sync.client import connect

from service.app import create_app
from service.contract.codecs import Result, encode_result
from service.contract.keys import results_key
from service.contract.tokens import SCOPES, VOLUMES_READ, create_token
from service.settings import Settings

if TYPE_CHECKING:
    from tests.service.conftest import Api, ServerThread


def test_healthz_and_readyz(api: Api) -> None:
    with api.client() as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        r = c.get("/readyz")
    assert r.status_code == 200 and r.json() == {"status": "ready"}


def test_readyz_is_503_without_redis(serve: type[ServerThread]) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    settings = Settings(redis_url=f"redis://127.0.0.1:{dead}/0", jwt_secret="s" * 40)
    with serve(create_app(settings)) as server:
        base = f"http://127.0.0.1:{server.port}"
        with httpx.Client(base_url=base, trust_env=False, timeout=10) as c:
            assert c.get("/healthz").status_code == 200
            r = c.get("/readyz")
            assert r.status_code == 503
            assert r.json()["error"]["reason"] == "redis_unavailable"
            token = create_token(settings.secret, SCOPES, 60)
            r = c.get("/v1/sessions", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 503 and r.json()["error"]["reason"] == "redis_unavailable"


def _metric(text: str, name: str) -> float:
    """The value of an unlabelled sample."""
    for line in text.splitlines():
        if line.split(" ")[0] == name:
            return float(line.split(" ")[1])
    raise AssertionError(f"{name} not in /metrics")


def test_metrics_count_frames_rejections_latency_and_viewers(api: Api, rdb: redis.Redis
                                                             ) -> None:
    with api.client() as c:
        before = c.get("/metrics").text
        sid = api.create_session()["id"]
        api.post_frames(sid, [api.frame(0), api.frame(1)])
        api.post_frames(sid, [{**api.frame(2), "voltages": [1.0]}])
        with connect(f"{api.ws_base}/v1/sessions/{sid}/stream", proxy=None,
                     subprotocols=["bearer", api.token(VOLUMES_READ)]) as ws:
            time.sleep(0.2)
            result = Result.from_volume(
                np.zeros((2, 3, 4)), seq=1, timestamp=0.025, kind="volume",
                method="d2ip", iterations=10, loss=None, latency_ms=80.0, lag_frames=0)
            rdb.xadd(results_key(sid), encode_result(result))
            ws.recv(timeout=5)
            ws.recv(timeout=5)
            during = c.get("/metrics")
        time.sleep(0.3)
        after = c.get("/metrics").text
    assert during.headers["content-type"].startswith("text/plain")
    text = during.text
    diff = _metric(text, "eitmon_frames_accepted_total") - _metric(
        before, "eitmon_frames_accepted_total")
    assert diff == 2
    assert 'eitmon_frames_rejected_total{reason="wrong_length"}' in text
    assert 'eitmon_reconstruction_latency_seconds_count{kind="volume"}' in text
    assert "eitmon_queue_lag_frames_count" in text
    assert _metric(text, "eitmon_viewers_connected") >= 1
    assert _metric(after, "eitmon_viewers_connected") == _metric(before,
                                                                 "eitmon_viewers_connected")


def _has_example(node: Any) -> bool:
    if isinstance(node, dict):
        if "example" in node or "examples" in node:
            return True
        return any(_has_example(v) for v in node.values())
    if isinstance(node, list):
        return any(_has_example(v) for v in node)
    return False


def test_openapi_has_examples_for_every_endpoint(api: Api) -> None:
    with api.client() as c:
        doc = c.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]

    def resolve(node: Any) -> Any:
        if isinstance(node, dict) and "$ref" in node:
            return schemas[node["$ref"].rsplit("/", 1)[1]]
        return node

    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            ok = next(v for k, v in op["responses"].items() if k.startswith("2"))
            content = ok.get("content", {})
            assert any(_has_example(m) or _has_example(resolve(m.get("schema")))
                       for m in content.values()), (method, path, "response")
            if "requestBody" in op:
                body = op["requestBody"]["content"]
                assert all(_has_example(m) or _has_example(resolve(m.get("schema")))
                           for m in body.values()), (method, path, "request")
            if op.get("security"):
                assert "401" in op["responses"] and "403" in op["responses"], (method, path)


def test_docs_and_redoc_are_served_without_a_cdn(api: Api) -> None:
    with api.client() as c:
        for page in ("/docs", "/redoc"):
            html = c.get(page)
            assert html.status_code == 200 and "text/html" in html.headers["content-type"]
            urls = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url:\s*'([^']+)'""",
                              html.text)
            urls = [a or b for a, b in urls]
            assert urls, page
            for url in urls:
                assert not urlsplit(url).netloc, (page, url)  # no external host
                assert c.get(url).status_code == 200, (page, url)
            assert "cdn" not in html.text.lower(), page
        assert '"validatorUrl": null' in c.get("/docs").text  # no online spec validator
