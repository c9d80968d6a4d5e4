"""`eitmon api` and `eitmon token` as real processes: logs never carry tokens or patient labels,
demo mode prints a working token, and `token create` prints the token on its last line."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import jwt
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from service.contract.tokens import FRAMES_WRITE, SESSIONS_ADMIN, VOLUMES_READ, create_token

SECRET = "cli-test-secret-0123456789abcdef0123456789abcdef"
LABEL = "PSEUDO-Zq9-bed-4"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EITMON_")}
    env.update(extra)
    return env


class Output:
    """Lines a child process writes, drained by a thread so that the pipe never fills."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._drain, args=(proc,), daemon=True)
        self.thread.start()

    def _drain(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "".join(self.lines)


@contextmanager
def eitmon_api(env: dict[str, str], *args: str) -> Iterator[tuple[str, subprocess.Popen, Output]]:
    port = _port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker.cli.main", "api", "--port", str(port), *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = Output(proc)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", trust_env=False, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"eitmon api did not start:\n{out.text}")
            time.sleep(0.1)
        yield base, proc, out
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(timeout=10)
        out.thread.join(timeout=5)


def _exercise(base: str) -> list[str]:
    """Touch every path that sees a token or the label; return the tokens used."""
    good = create_token(SECRET, [SESSIONS_ADMIN, FRAMES_WRITE, VOLUMES_READ], 600)
    expired = create_token(SECRET, [SESSIONS_ADMIN], 60, now=time.time() - 3600)
    forged = create_token("x" * 40, [SESSIONS_ADMIN], 600)
    with httpx.Client(base_url=base, trust_env=False, timeout=10) as c:
        h = {"Authorization": f"Bearer {good}"}
        s = c.post("/v1/sessions", json={"patient_label": LABEL}, headers=h).json()
        sid = s["id"]
        frames = {"frames": [{"seq": 0, "timestamp": 0.0, "voltages": [0.1] * 928}]}
        assert c.post(f"/v1/sessions/{sid}/frames", json=frames, headers=h).status_code == 202
        assert c.get(f"/v1/sessions/{sid}", headers=h).json()["patient_label"] == LABEL
        for bad in (expired, forged):
            r = c.get("/v1/sessions", headers={"Authorization": f"Bearer {bad}"})
            assert r.status_code == 401
        c.post("/v1/sessions", json={"patient_label": LABEL, "grid": [1]}, headers=h)
    url = base.replace("http", "ws") + f"/v1/sessions/{sid}/stream"
    with connect(url, proxy=None, subprotocols=["bearer", good]) as ws:
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.2)
    for bad in (expired, forged):
        with connect(url, proxy=None, subprotocols=["bearer", bad]) as ws:
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=5)
        with connect(url, proxy=None) as ws:
            ws.send(json.dumps({"token": bad}))
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=5)
    return [good, expired, forged]


def test_logs_never_contain_tokens_or_patient_labels(redis_url: str) -> None:
    env = _env(REDIS_URL=redis_url, EITMON_JWT_SECRET=SECRET)
    with eitmon_api(env, "--log-level", "debug") as (base, proc, out):
        tokens = _exercise(base)
        time.sleep(0.3)
        proc.terminate()
        proc.wait(timeout=10)
        out.thread.join(timeout=5)
    output = out.text
    assert "POST /v1/sessions HTTP/1.1" in output  # the access log was captured
    assert "/stream" in output  # and the WebSocket handshakes
    for token in tokens:
        assert token not in output
        for part in token.split("."):  # nor any segment of it
            assert part not in output
    assert LABEL not in output
    assert SECRET not in output


def test_api_refuses_to_start_without_a_secret(redis_url: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "worker.cli.main", "api", "--port", "1"],
                          env=_env(REDIS_URL=redis_url), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert "EITMON_JWT_SECRET" in proc.stderr


def test_demo_mode_prints_a_working_token(redis_url: str) -> None:
    with eitmon_api(_env(REDIS_URL=redis_url, EITMON_DEMO="1")) as (base, _, out):
        deadline = time.monotonic() + 10
        while not any(line.startswith("eyJ") for line in out.lines):
            assert time.monotonic() < deadline, out.text
            time.sleep(0.05)
        token = next(line for line in out.lines if line.startswith("eyJ")).strip()
        r = httpx.get(f"{base}/v1/sessions", headers={"Authorization": f"Bearer {token}"},
                      trust_env=False)
        assert r.status_code == 200, r.text


def _token_cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "worker.cli.main", "token", "create", *args],
                          env=_env(**env), capture_output=True, text=True, timeout=60)


def test_token_create_prints_the_token_last(tmp_path: Any) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    sid = "0123456789abcdef" * 2
    out = _token_cli("--scope", "frames:write", "--scope", "volumes:read", "--ttl", "120",
                     "--subject", "belt-12", "--session", sid,
                     EITMON_JWT_SECRET_FILE=str(secret_file))
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip().splitlines()[-1]
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["scope"] == ["frames:write", "volumes:read"]
    assert claims["sub"] == "belt-12" and claims["exp"] - claims["iat"] == 120
    assert claims["sessions"] == [sid]
    assert f"jti {claims['jti']}" in out.stderr and token not in out.stderr

    assert _token_cli("--scope", "root", EITMON_JWT_SECRET=SECRET).returncode == 2
    both = _token_cli("--scope", "volumes:read", EITMON_JWT_SECRET=SECRET,
                      EITMON_JWT_SECRET_FILE=str(secret_file))
    assert both.returncode == 2 and "not both" in both.stderr
    demo = _token_cli("--scope", "volumes:read", EITMON_DEMO="1")
    assert demo.returncode == 2


def test_token_create_binds_device_tokens_and_caps_lifetimes(tmp_path: Any) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET)
    env = {"EITMON_JWT_SECRET_FILE": str(secret_file), "EITMON_TOKEN_MAX_TTL_S": "3600"}
    unbound = _token_cli("--scope", "frames:write", **env)
    assert unbound.returncode == 2 and "--session" in unbound.stderr
    bad_id = _token_cli("--scope", "volumes:read", "--session", "bed-4", **env)
    assert bad_id.returncode == 2 and "session ids" in bad_id.stderr
    too_long = _token_cli("--scope", "volumes:read", "--ttl", "3601", **env)
    assert too_long.returncode == 2 and "maximum lifetime of 3600 s" in too_long.stderr
    viewer = _token_cli("--scope", "volumes:read", "--ttl", "3600", "--session", "a" * 32,
                        "--session", "b" * 32, **env)
    assert viewer.returncode == 0, viewer.stderr
    claims = jwt.decode(viewer.stdout.splitlines()[-1], SECRET, algorithms=["HS256"])
    assert claims["sessions"] == ["a" * 32, "b" * 32]


TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")


def test_log_lines_are_timestamped_and_the_secret_variable_warns(redis_url: str) -> None:
    env = _env(REDIS_URL=redis_url, EITMON_JWT_SECRET=SECRET)
    with eitmon_api(env) as (base, proc, out):
        assert httpx.get(f"{base}/v1/sessions", trust_env=False).status_code == 401
        proc.terminate()
        proc.wait(timeout=10)
        out.thread.join(timeout=5)
    lines = [line for line in out.lines if line.strip()]
    assert any("GET /v1/sessions" in line for line in lines)  # the access log too
    assert all(TIMESTAMP.match(line) for line in lines), out.text
    assert any("WARNING" in line and "prefer EITMON_JWT_SECRET_FILE" in line for line in lines)
    assert SECRET not in out.text


def test_metrics_can_be_served_on_a_separate_port(redis_url: str, tmp_path: Any) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET)
    metrics_port = _port()
    env = _env(REDIS_URL=redis_url, EITMON_JWT_SECRET_FILE=str(secret_file),
               EITMON_METRICS_PORT=str(metrics_port))
    with eitmon_api(env) as (base, _, out):
        assert httpx.get(f"{base}/metrics", trust_env=False).status_code == 404
        r = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", trust_env=False)
        assert r.status_code == 200 and "eitmon_frames_accepted_total" in r.text
        assert "/metrics" not in httpx.get(f"{base}/openapi.json", trust_env=False).text
    assert "EITMON_JWT_SECRET" not in out.text  # a secret file: no warning
