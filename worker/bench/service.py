"""Service benchmark on loopback: embedded valkey, the API (uvicorn, a child process) and one
worker, driven by asyncio clients in this process.

1. ingest: every session posts binary batches back to back for `ingest_seconds`; the figure is
   frames accepted (202) per second across sessions;
2. drain: the time until the worker has reconstructed or coalesced every accepted frame (the
   counters must add up);
3. latency: every session posts one frame every 1/rate s while a viewer per session watches the
   WebSocket; preview (and main volume) latency is from just before the POST to the arrival of
   that frame's message on the WebSocket.

Baseline, measured in the same run: the round trip of `GET /healthz` on the same loopback.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import numpy as np
from websockets.asyncio.client import connect

from service.contract.tokens import SCOPES, create_token
from worker.forward import load_model
from worker.forward.model import ForwardModel
from worker.runtime.local import Child, start_api, start_valkey, start_worker


@dataclass
class Config:
    sessions: int = 8
    rate: float = 20.0
    seconds: float = 20.0  # latency phase
    ingest_seconds: float = 5.0
    batch: int = 32  # frames per POST in the ingest phase
    method: str = "tikhonov"  # the sessions' main method
    geometry: Any = "thorax-2x16"
    protocol: Any = "skip4"
    grid: tuple[int, int, int] = (16, 32, 32)


@dataclass
class Figures:
    config: dict[str, Any]
    ingest_frames_per_s: float = 0.0
    drain_seconds: float = 0.0
    counters_add_up: bool = False
    preview_ms: dict[str, float] = field(default_factory=dict)
    preview_worker_ms: dict[str, float] = field(default_factory=dict)  # accepted -> published
    volume_ms: dict[str, float] = field(default_factory=dict)
    previews_received: float = 0.0  # fraction of the latency phase's frames
    healthz_ms: dict[str, float] = field(default_factory=dict)
    cpu_percent: dict[str, float] = field(default_factory=dict)  # of one core, latency phase
    load_average: list[float] = field(default_factory=list)
    worker_exit: int | None = None  # 0 after a graceful stop


def synthetic_frames(model: ForwardModel, n: int, period: int = 80) -> np.ndarray:
    """n float32 frames (n, M) of a lung region breathing, from the linearised model."""
    values = np.zeros(model.n_voxels)
    values[: model.n_voxels // 3] = -0.2
    depth = 0.5 * (1 - np.cos(2 * np.pi * np.arange(n) / period))
    v0 = model.reference_voltages
    return (v0 + np.abs(v0) * (depth[:, None] * (model.jacobian @ values))).astype("<f4")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its children so far (Linux /proc; 0 where
    unavailable): the embedded valkey-server runs under a wrapper process."""
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        children = open(f"/proc/{pid}/task/{pid}/children").read().split()
    except OSError:
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(cpu_seconds(int(c)) for c in children)


def percentiles(samples_s: list[float]) -> dict[str, float]:
    if not samples_s:
        return {}
    ms = np.asarray(samples_s) * 1e3
    return {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
            "max": float(ms.max()), "n": float(len(ms))}


class Bench:
    """The running system and the clients."""

    def __init__(self, cfg: Config, children: list[Child], secret: str,
                 model: ForwardModel) -> None:
        self.cfg, self.children, self.model = cfg, children, model
        self.api = next(c for c in children if c.name == "api")
        self.token = create_token(secret, SCOPES, 3600, subject="bench")
        self.frames = synthetic_frames(model, 400)
        self.next_seq: dict[str, int] = {}

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.api.url, trust_env=False, timeout=30.0,
                                 headers={"Authorization": f"Bearer {self.token}"},
                                 limits=httpx.Limits(max_connections=2 * self.cfg.sessions))

    async def open_sessions(self, c: httpx.AsyncClient) -> list[str]:
        body = {"geometry": self.model.spec["geometry"], "protocol": self.model.spec["protocol"],
                "grid": list(self.cfg.grid), "method": self.cfg.method, "realtime": "realtime",
                "reference": {"mode": "explicit",
                              "voltages": self.model.reference_voltages.tolist()}}
        sids = []
        for _ in range(self.cfg.sessions):
            r = await c.post("/v1/sessions", json=body)
            r.raise_for_status()
            sids.append(r.json()["id"])
            self.next_seq[sids[-1]] = 0
        return sids

    async def post(self, c: httpx.AsyncClient, sid: str, count: int) -> int:
        seq = self.next_seq[sid]
        idx = np.arange(seq, seq + count) % len(self.frames)
        self.next_seq[sid] = seq + count
        r = await c.post(f"/v1/sessions/{sid}/frames", content=self.frames[idx].tobytes(),
                         headers={"Content-Type": "application/octet-stream",
                                  "X-Frame-Count": str(count), "X-Seq-Start": str(seq),
                                  "X-Timestamp-Start": repr(seq / self.cfg.rate),
                                  "X-Frame-Interval": repr(1 / self.cfg.rate)})
        r.raise_for_status()
        return r.json()["accepted"]

    async def wait_claimed(self, c: httpx.AsyncClient, sids: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for sid in sids:
            while (await c.get(f"/v1/sessions/{sid}")).json()["worker"] is None:
                if time.monotonic() > deadline:
                    raise RuntimeError("the worker did not claim every session")
                await asyncio.sleep(0.2)
        await asyncio.sleep(2.0)  # setup (model, methods) after the lease

    async def ingest(self, c: httpx.AsyncClient, sids: list[str]) -> float:
        end = time.monotonic() + self.cfg.ingest_seconds
        t0 = time.monotonic()

        async def one(sid: str) -> int:
            total = 0
            while time.monotonic() < end:
                total += await self.post(c, sid, self.cfg.batch)
            return total

        accepted = sum(await asyncio.gather(*(one(s) for s in sids)))
        return accepted / (time.monotonic() - t0)

    async def drain(self, c: httpx.AsyncClient, sids: list[str], timeout: float
                    ) -> tuple[float, bool]:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            infos = [(await c.get(f"/v1/sessions/{s}")).json()["counters"] for s in sids]
            if all(i["accepted"] == i["reconstructed"] + i["coalesced"] + i["dropped"]
                   for i in infos):
                return time.monotonic() - t0, True
            await asyncio.sleep(0.2)
        return time.monotonic() - t0, False

    async def latency(self, c: httpx.AsyncClient, sids: list[str]
                      ) -> tuple[list[float], list[float], list[float], int]:
        sent: dict[tuple[str, int], float] = {}
        preview: list[float] = []
        in_worker: list[float] = []
        volume: list[float] = []
        ws_url = self.api.url.replace("http://", "ws://")
        stop = asyncio.Event()

        async def watch(sid: str) -> None:
            async with connect(f"{ws_url}/v1/sessions/{sid}/stream", compression=None,
                               subprotocols=["bearer", self.token], max_size=None) as ws:
                ready.set()
                while not stop.is_set():
                    try:
                        meta = json.loads(await asyncio.wait_for(ws.recv(), 0.5))
                        await ws.recv()
                    except TimeoutError:
                        continue
                    t = sent.get((sid, meta["seq"]))
                    if t is None:
                        continue
                    if meta["kind"] == "preview":
                        preview.append(time.perf_counter() - t)
                        in_worker.append(meta["latency_ms"] / 1e3)
                    else:
                        volume.append(time.perf_counter() - t)

        async def belt(sid: str, offset: float) -> None:
            start = time.monotonic() + offset
            for k in range(int(self.cfg.seconds * self.cfg.rate)):
                await asyncio.sleep(max(start + k / self.cfg.rate - time.monotonic(), 0))
                sent[(sid, self.next_seq[sid])] = time.perf_counter()
                await self.post(c, sid, 1)

        ready = asyncio.Event()
        watchers = [asyncio.create_task(watch(s)) for s in sids]
        await asyncio.wait_for(ready.wait(), 10)
        await asyncio.sleep(1.0)
        n = len(sids)
        await asyncio.gather(*(belt(s, k / (n * self.cfg.rate)) for k, s in enumerate(sids)))
        await asyncio.sleep(2.0)
        stop.set()
        await asyncio.gather(*watchers)
        return preview, in_worker, volume, len(sent)

    async def healthz(self, c: httpx.AsyncClient, n: int = 200) -> list[float]:
        out = []
        for _ in range(n):
            t = time.perf_counter()
            (await c.get("/healthz")).raise_for_status()
            out.append(time.perf_counter() - t)
        return out

    async def run(self, progress: Any) -> Figures:
        fig = Figures(config=asdict(self.cfg))
        async with self.client() as c:
            sids = await self.open_sessions(c)
            await self.wait_claimed(c, sids, 300)
            progress("sessions claimed; ingest phase")
            fig.ingest_frames_per_s = await self.ingest(c, sids)
            progress(f"ingest {fig.ingest_frames_per_s:.0f} frames/s; draining")
            fig.drain_seconds, fig.counters_add_up = await self.drain(c, sids, 120)
            progress("latency phase")
            pids = {c.name: c.process.pid for c in self.children} | {"bench": os.getpid()}
            before, t0 = {k: cpu_seconds(p) for k, p in pids.items()}, time.monotonic()
            preview, in_worker, volume, n_sent = await self.latency(c, sids)
            fig.cpu_percent = {k: 100 * (cpu_seconds(p) - before[k]) / (time.monotonic() - t0)
                               for k, p in pids.items()}
            fig.preview_ms, fig.volume_ms = percentiles(preview), percentiles(volume)
            fig.preview_worker_ms = percentiles(in_worker)
            fig.previews_received = len(preview) / max(n_sent, 1)
            fig.healthz_ms = percentiles(await self.healthz(c))
        fig.load_average = list(os.getloadavg())
        return fig


def run(cfg: Config, progress: Any = print) -> Figures:
    """Start valkey, the API and a worker; run the phases; stop everything."""
    model = load_model(geometry=cfg.geometry, protocol=cfg.protocol, grid=cfg.grid,
                       progress=True)
    secret = secrets.token_urlsafe(48)
    children: list[Child] = []
    try:
        children.append(start_valkey())
        redis_url = children[-1].url
        children.append(start_api(redis_url, secret, quiet=True))
        children.append(start_worker(redis_url, {
            "EITMON_WORKER_NAME": "bench-worker", "EITMON_LOG_LEVEL": "warning",
            "EITMON_SESSIONS_PER_WORKER": str(cfg.sessions)}))
        fig = asyncio.run(Bench(cfg, children, secret, model).run(progress))
        fig.worker_exit = children[-1].stop()
        return fig
    finally:
        for child in reversed(children):
            child.stop()
