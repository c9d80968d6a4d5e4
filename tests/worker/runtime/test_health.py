"""Liveness: the heartbeat stops when the compute thread hangs, and the probe sees it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import pytest
import redis

from service.contract.keys import heartbeat_key
from worker.runtime.config import WorkerConfig
from worker.runtime.health import liveness

if TYPE_CHECKING:
    from conftest import Bed, Running


def probe(run: Running) -> int:
    """`eitmon worker --check-liveness` with the worker's settings: its exit status."""
    env = {**os.environ, "REDIS_URL": run.cfg.redis_url,
           "EITMON_WORKER_NAME": run.cfg.worker_name,
           "EITMON_HEARTBEAT_TTL_S": str(run.cfg.heartbeat_ttl_s),
           "EITMON_LEASE_RENEW_MS": str(run.cfg.lease_renew_ms)}
    return subprocess.run([sys.executable, "-m", "worker.cli.main", "worker",
                           "--check-liveness"], env=env, capture_output=True,
                          timeout=60).returncode


def test_a_hung_compute_thread_fails_the_liveness_probe(
        bed: Bed, in_process: Callable[..., Running], test_methods: dict[str, Any]) -> None:
    entered, release = threading.Event(), threading.Event()
    methods = {"tikhonov": test_methods["PseudoInverse"],
               "tv": partial(test_methods["Blocks"], entered=entered, release=release)}
    run = in_process(methods, stall_timeout_s=1.0, heartbeat_ttl_s=1.0)

    def alive() -> bool:
        return liveness(bed.redis, run.cfg)[0]

    try:
        bed.wait(alive, "the first heartbeat")  # idle: the heartbeat goes on
        assert bed.redis.pttl(heartbeat_key("w1")) > 0
        assert probe(run) == 0
        sid = bed.create(method="tv")
        bed.post(sid, bed.frames(2), 0)
        bed.wait(entered.is_set, "the main method to be called")
        bed.wait(lambda: not alive(), "the heartbeat to go stale")
        assert probe(run) == 1
    finally:
        release.set()
    bed.wait(alive, "the heartbeat to resume")
    bed.wait(lambda: bed.settled(sid, 2), "the session to finish")


def test_without_a_worker_name_the_check_reads_this_hosts_heartbeats(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EITMON_WORKER_NAME", raising=False)
    monkeypatch.setenv("REDIS_URL", redis_url)
    cfg = WorkerConfig()
    assert "worker_name" not in cfg.model_fields_set
    client = redis.Redis.from_url(redis_url)
    host = socket.gethostname()
    try:
        assert not liveness(client, cfg)[0]  # none at all
        client.set(heartbeat_key("other-host-1"), repr(time.time()))
        assert not liveness(client, cfg)[0]  # another host's worker does not count
        client.set(heartbeat_key(f"{host}-1"), repr(time.time()))
        assert liveness(client, cfg)[0]
        client.set(heartbeat_key(f"{host}-2"), repr(time.time() - 2 * cfg.heartbeat_ttl_s))
        alive, why = liveness(client, cfg)
        assert not alive and "stale" in why
        named = WorkerConfig(worker_name=f"{host}-1")
        assert liveness(client, named)[0]  # a set name checks that worker only
    finally:
        client.close()
