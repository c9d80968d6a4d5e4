"""Idle expiry: an open session without frames for the idle timeout is closed by the API."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

import redis
from prometheus_client import REGISTRY

from service.app import create_app
from service.contract.keys import CONTROL_STREAM
from service.contract.tokens import SESSIONS_ADMIN
from tests.service.conftest import Api, make_settings

if TYPE_CHECKING:
    from tests.service.conftest import ServerThread


def test_an_idle_session_is_closed_counted_and_shown(
        serve: type[ServerThread], redis_url: str, rdb: redis.Redis) -> None:
    settings = make_settings(redis_url, idle_timeout_s=2, idle_check_interval_s=0.2)
    before = REGISTRY.get_sample_value("eitmon_sessions_idle_closed_total") or 0
    with serve(create_app(settings)) as server:
        api = Api(f"http://127.0.0.1:{server.port}", settings)
        idle, active = api.create_session()["id"], api.create_session()["id"]
        assert api.post_frames(idle, [api.frame(0)]).status_code == 202
        stop = threading.Event()
        sent: list[int] = []

        def keep_sending() -> None:  # the other bed sends a frame every 0.1 s
            while not stop.is_set():
                sent.append(api.post_frames(active, [api.frame(len(sent))]).status_code)
                time.sleep(0.1)

        sender = threading.Thread(target=keep_sending)
        sender.start()
        try:
            with api.client() as c:
                while len(sent) < 200:  # wait on progress: >= 10 idle timeouts of the other bed
                    info = c.get(f"/v1/sessions/{idle}", headers=api.auth(SESSIONS_ADMIN)).json()
                    if info["status"] != "open":
                        break
                    time.sleep(0.1)
                other = c.get(f"/v1/sessions/{active}", headers=api.auth(SESSIONS_ADMIN)).json()
            # read while the other bed still sends: once it stops, it is idle 2 s later, and
            # the server may take that long to stop on a loaded machine
            control = rdb.xlen(CONTROL_STREAM)
            closed = REGISTRY.get_sample_value("eitmon_sessions_idle_closed_total")
        finally:
            stop.set()
            sender.join()
    assert info["status"] == "closed" and info["close_reason"] == "idle"
    assert info["closed_at"] - info["created_at"] >= settings.idle_timeout_s
    assert other["status"] == "open" and other["close_reason"] is None and set(sent) == {202}
    assert control == 1  # the autoscaler counts the active session only
    assert closed == before + 1
