"""A real API server (uvicorn on a loopback port, in a thread) against the test Redis."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis
import uvicorn

from service.app import create_app
from service.contract.tokens import FRAMES_WRITE, SCOPES, SESSIONS_ADMIN, create_token
from service.logsafe import log_config
from service.settings import Settings

SECRET = "test-secret-0123456789abcdef0123456789abcdef"
M_DEFAULT = 928  # skip4 on the 2x16 thorax belt
STOP_S = 30.0  # per stage of a test server's stop (graceful, then forced)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerThread:
    """uvicorn.Server running in a daemon thread."""

    def __init__(self, app: Any, level: str = "warning") -> None:
        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                log_config=log_config(level), lifespan="on",
                                ws_ping_interval=None, ws_per_message_deflate=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop the server and wait until it has: one left running (its idle expiry, its
        consumers) would act on the next tests' sessions in the shared Redis."""
        self.server.should_exit = True
        self.thread.join(timeout=STOP_S)
        if self.thread.is_alive():  # connections or tasks hold the graceful shutdown
            self.server.force_exit = True
            self.thread.join(timeout=STOP_S)
        if self.thread.is_alive():
            raise RuntimeError(f"uvicorn did not stop within {2 * STOP_S} s")


@dataclass
class Api:
    """The running server: its URLs, settings, token minting and small request helpers."""

    base: str
    settings: Settings
    m_default: int = M_DEFAULT

    @staticmethod
    def frame(seq: int, m: int = M_DEFAULT, value: float = 0.01, ts: float | None = None
              ) -> dict[str, Any]:
        """A valid JSON frame."""
        return {"seq": seq, "timestamp": seq * 0.025 if ts is None else ts,
                "voltages": [value + 1e-4 * i for i in range(m)]}

    @property
    def ws_base(self) -> str:
        return self.base.replace("http://", "ws://")

    def token(self, *scopes: str, ttl: int = 600, now: float | None = None,
              sessions: list[str] | None = None) -> str:
        return create_token(self.settings.secret, scopes or SCOPES, ttl, subject="test",
                            now=now, sessions=sessions)

    def auth(self, *scopes: str, sessions: list[str] | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(*scopes, sessions=sessions)}"}

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, trust_env=False, timeout=10)

    def create_session(self, **body: Any) -> dict[str, Any]:
        with self.client() as c:
            r = c.post("/v1/sessions", json=body, headers=self.auth(SESSIONS_ADMIN))
        assert r.status_code == 201, r.text
        return r.json()

    def post_frames(self, sid: str, frames: list[dict[str, Any]], **kw: Any) -> httpx.Response:
        with self.client() as c:
            return c.post(f"/v1/sessions/{sid}/frames", json={"frames": frames},
                          headers=self.auth(FRAMES_WRITE, sessions=[sid]), **kw)


def make_settings(redis_url: str, **over: Any) -> Settings:
    return Settings(redis_url=redis_url, jwt_secret=SECRET, max_batch_frames=16,
                    max_body_bytes=1024 * 1024, ws_auth_timeout_s=2.0,
                    **{"revocation_check_s": 0.5, **over})


@pytest.fixture
def serve() -> type[ServerThread]:
    """`with serve(app, level) as server:` runs another app on its own port."""
    return ServerThread


@pytest.fixture(scope="session")
def api_server(redis_server_url: str) -> Iterator[Api]:
    settings = make_settings(redis_server_url)
    with ServerThread(create_app(settings)) as server:
        yield Api(f"http://127.0.0.1:{server.port}", settings)


@pytest.fixture
def api(api_server: Api, redis_url: str) -> Api:
    """The running API, with Redis flushed before the test."""
    return api_server


@pytest.fixture
def rdb(redis_url: str) -> Iterator[redis.Redis]:
    """A synchronous client for looking at what the API wrote."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()
