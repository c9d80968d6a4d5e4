"""Real processes for the runtime tests: the API (`eitmon api`) and workers (`eitmon worker`
processes, or a `Worker` in a thread of the test process, with the test reconstructors of
lsq_method.py injected) on the test valkey, a small forward model, and a client that talks to
them the way a belt and a viewer do."""

from __future__ import annotations

import contextlib
import json
import runpy
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis
from websockets.sync.client import ClientConnection, connect

from service.contract.codecs import Result, decode_result
from service.contract.keys import (
    SESSIONS_INDEX,
    counters_key,
    lease_key,
    progress_key,
    results_key,
)
from service.contract.tokens import SCOPES, VOLUMES_READ, create_token
from worker.forward import load_model
from worker.forward.model import ForwardModel
from worker.recon.base import normalise
from worker.runtime.config import WorkerConfig
from worker.runtime.local import Child, start_api, start_worker
from worker.runtime.loop import Worker
from worker.runtime.methods import Factory

SECRET = "runtime-test-secret-0123456789abcdef0123"
SPEC = {"geometry": {"preset": "thorax-1x16", "mesh_size": 0.025}, "protocol": "skip4",
        "grid": [4, 8, 8]}  # M = 208, 208 voxels inside: built once per run, then cached
LSQ = Path(__file__).with_name("lsq_method.py")
TEST_METHODS = runpy.run_path(str(LSQ))
PseudoInverse = TEST_METHODS["PseudoInverse"]
# `eitmon worker` with the pseudo-inverse as its only method, under the name "tikhonov"
LAUNCHER = [sys.executable, "-c", "import runpy; from worker.runtime.main import run; "
            f"run({{'tikhonov': runpy.run_path({str(LSQ)!r})['PseudoInverse']}})"]
FAST = {"lease_ms": 1000, "lease_renew_ms": 250, "scan_interval_s": 0.3,
        "checkpoint_every": 5, "device": "cpu", "log_level": "info",
        "fused": False}  # the test methods do not use D2IP's kernels: no build at start
# Waits on a worker follow its progress: they fail after STALL_S without any, or after BOUND_S
# in all (a loaded 2-core machine may take several seconds for one session's setup).
STALL_S = 60.0
BOUND_S = 600.0


@pytest.fixture(scope="session")
def test_methods() -> dict[str, Any]:
    """The reconstructor classes of lsq_method.py, by name."""
    return TEST_METHODS


@pytest.fixture(scope="session")
def lsq() -> dict[str, Factory]:
    """The methods of a test worker: the pseudo-inverse, under the name "tikhonov"."""
    return {"tikhonov": PseudoInverse}


@pytest.fixture(scope="session")
def small_model(model_cache_dir: str) -> ForwardModel:
    return load_model(**SPEC)


@pytest.fixture(scope="session")
def api_process(redis_server_url: str) -> Iterator[Child]:
    child = start_api(redis_server_url, SECRET, quiet=True,
                      env={"EITMON_VIEWER_QUEUE": "1000"})  # keep every volume for the tests
    yield child
    child.stop()


@dataclass
class Bed:
    """A client of the running API and of Redis (to read counters and results)."""

    base: str
    redis: redis.Redis
    model: ForwardModel
    secret: str = SECRET

    def frames(self, n: int, period: int = 20) -> np.ndarray:
        """n frames (n, M) of a lung region breathing, from the linearised model."""
        values = np.zeros(self.model.n_voxels)
        values[: self.model.n_voxels // 3] = -0.2
        depth = 0.5 * (1 - np.cos(2 * np.pi * np.arange(n) / period))
        v0 = self.model.reference_voltages
        dv = depth[:, None] * (self.model.jacobian @ values)
        return (v0 + np.abs(v0) * dv).astype(np.float32)

    def expected(self, frames: np.ndarray) -> np.ndarray:
        """The volumes the test method makes of `frames` against the explicit reference."""
        ref = self.model.reference_voltages.astype(np.float32).astype(np.float64)
        recon = PseudoInverse(self.model)
        return np.stack([recon.push(normalise(f, ref)).volume for f in frames])

    def activity(self) -> tuple[Any, ...]:
        """Everything the worker writes for the sessions: counters, progress, results and
        leases. It changes whenever a worker makes progress."""
        sids = [sid.decode() for sid in self.redis.zrange(SESSIONS_INDEX, 0, -1)]
        with self.redis.pipeline(transaction=False) as p:
            for sid in sids:
                p.hgetall(counters_key(sid))
                p.hgetall(progress_key(sid))
                p.xlen(results_key(sid))
                p.get(lease_key(sid))
            return tuple(repr(reply) for reply in p.execute())

    def wait(self, check: Callable[[], bool], what: str, stall: float = STALL_S) -> None:
        """Wait until `check()`: fail only after `stall` s without any worker progress
        (`activity`), or after `BOUND_S` in all, so a loaded machine slows the test down
        without failing it."""
        start = last_change = time.monotonic()
        seen = self.activity()
        while not check():
            now = time.monotonic()
            if now - last_change > stall or now - start > BOUND_S:
                raise AssertionError(f"no progress for {now - last_change:.0f} s ("
                                     f"{now - start:.0f} s in all) waiting for {what}")
            time.sleep(0.05)
            current = self.activity()
            if current != seen:
                seen, last_change = current, time.monotonic()

    def receive(self, ws: ClientConnection, stall: float = STALL_S
                ) -> tuple[dict[str, Any], bytes]:
        """The next (metadata, volume) pair of a viewer, waiting as `wait` does."""
        got: list[str | bytes] = []

        def two() -> bool:
            with contextlib.suppress(TimeoutError):
                got.append(ws.recv(timeout=0.2))
            return len(got) >= 2

        self.wait(two, "a volume on the viewer's socket", stall)
        meta, binary = got
        assert isinstance(meta, str) and isinstance(binary, bytes)
        return json.loads(meta), binary

    def token(self, *scopes: str) -> str:
        return create_token(SECRET, scopes or SCOPES, 600, subject="test")

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, trust_env=False, timeout=10,
                            headers={"Authorization": f"Bearer {self.token()}"})

    def create(self, **over: Any) -> str:
        body = {**SPEC, "method": "tikhonov", "realtime": "complete",
                "reference": {"mode": "explicit",
                              "voltages": self.model.reference_voltages.tolist()}, **over}
        with self.http() as c:
            r = c.post("/v1/sessions", json=body)
        assert r.status_code == 201, r.text
        return r.json()["id"]

    def post(self, sid: str, frames: np.ndarray, seq0: int) -> httpx.Response:
        """Binary frames seq0, seq0 + 1, ... at 20 frames/s."""
        with self.http() as c:
            r = c.post(f"/v1/sessions/{sid}/frames", content=frames.astype("<f4").tobytes(),
                       headers={"Content-Type": "application/octet-stream",
                                "X-Frame-Count": str(len(frames)), "X-Seq-Start": str(seq0),
                                "X-Timestamp-Start": str(seq0 * 0.05),
                                "X-Frame-Interval": "0.05"})
        assert r.status_code == 202, r.text
        return r

    def close(self, sid: str) -> None:
        with self.http() as c:
            assert c.delete(f"/v1/sessions/{sid}").status_code == 200

    def info(self, sid: str) -> dict[str, Any]:
        with self.http() as c:
            return c.get(f"/v1/sessions/{sid}").json()

    def counters(self, sid: str) -> dict[str, int]:
        raw = self.redis.hgetall(counters_key(sid))
        return {k.decode(): int(v) for k, v in raw.items()}

    def settled(self, sid: str, accepted: int) -> bool:
        """Every accepted frame is reconstructed, coalesced or dropped."""
        c = self.counters(sid)
        return c.get("accepted") == accepted and (
            c.get("reconstructed", 0) + c.get("coalesced", 0) + c.get("dropped", 0) == accepted)

    def results(self, sid: str, kind: str = "volume") -> list[Result]:
        entries = self.redis.xrange(results_key(sid))
        out = [decode_result(f) for _, f in entries]
        return [r for r in out if r.kind == kind]

    def viewer(self, sid: str) -> ClientConnection:
        return connect(f"{self.base.replace('http', 'ws')}/v1/sessions/{sid}/stream",
                       proxy=None, subprotocols=["bearer", self.token(VOLUMES_READ)])


@pytest.fixture
def bed(api_process: Child, redis_url: str, small_model: ForwardModel) -> Iterator[Bed]:
    client = redis.Redis.from_url(redis_url)
    yield Bed(api_process.url, client, small_model)
    client.close()


@pytest.fixture
def workers(redis_url: str, tmp_path: Path) -> Iterator[Callable[..., Child]]:
    """start(name, **env) -> a worker subprocess with short leases; killed after the test."""
    started: list[Child] = []

    def start(name: str, **env: str) -> Child:
        fast = {f"EITMON_{key.upper()}": str(int(value) if isinstance(value, bool) else value)
                for key, value in FAST.items()}
        child = start_worker(redis_url, {**fast, "EITMON_WORKER_NAME": name,
                                         "EITMON_CHECKPOINT_DIR": str(tmp_path / "ckpt"),
                                         **env}, argv=LAUNCHER)
        started.append(child)
        return child

    yield start
    for child in started:
        child.stop(signal.SIGKILL)


@dataclass
class Running:
    """A `Worker` running in a thread of the test process."""

    worker: Worker
    thread: threading.Thread
    cfg: WorkerConfig
    redis: redis.Redis


@pytest.fixture
def in_process(redis_url: str, tmp_path: Path) -> Iterator[Callable[..., Running]]:
    """start(methods, name="w1", **settings) -> a `Worker` with those methods and short leases
    in a thread of this process; stopped after the test."""
    running: list[Running] = []

    def start(methods: dict[str, Factory], name: str = "w1", **settings: Any) -> Running:
        cfg = WorkerConfig(redis_url=redis_url, worker_name=name,
                           checkpoint_dir=tmp_path / "ckpt", **{**FAST, **settings})
        client = redis.Redis.from_url(redis_url)
        worker = Worker(cfg, client, methods=methods)
        thread = threading.Thread(target=worker.run, name=f"worker {name}", daemon=True)
        thread.start()
        running.append(Running(worker, thread, cfg, client))
        return running[-1]

    yield start
    for run in running:
        run.worker.stop()
        run.thread.join(60)
        run.redis.close()
