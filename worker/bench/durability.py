"""Durability benchmark on loopback: valkey with its append-only file (AOF) on, the API and
workers as child processes, and one simulated belt per session posting at a fixed rate, while
the busiest worker, valkey and the API are killed with SIGKILL and restarted at fixed times.

The belts retry a batch that got no 2xx (a transport error, a 5xx or a 429) with the same seqs
until it gets one: the API acknowledges a frame it had already queued as a duplicate, so a retry
never queues a frame twice. A frame that got a 2xx must never be lost. At the end the benchmark
waits until the workers have processed every accepted frame (it follows their progress), reads
every session's frame stream, closes the sessions and compares, per session:
- acknowledged: distinct seqs that got a 2xx (the belt's own count);
- the session's counters: accepted, duplicate, reconstructed, coalesced, dropped;
- missing: acknowledged seqs absent from the frame stream (the part the worker's checkpoints
  did not trim: about the last `EITMON_CHECKPOINT_EVERY` frames), or fewer accepted frames than
  acknowledged seqs, whichever is larger. The count is exact for the trimmed part too when
  every seq sent was acknowledged (sent = acknowledged): the API accepts each seq at most once
  and only seqs that were sent, so accepted = acknowledged means the same seqs;
- unprocessed: accepted - reconstructed - coalesced - dropped once the workers are done (or
  after `stall_s` without progress: the report is written either way);
- lost = missing + unprocessed;
- pending: frame entries delivered to a worker and never acknowledged, after the drain (what
  an unprocessed frame usually is).

valkey runs with the deployment's AOF policy (`appendfsync always`, deploy/base/valkey.conf)
unless told otherwise. A SIGKILL is a process crash. Under `everysec` valkey normally writes a
command to its AOF (the kernel's page cache, which outlives the process) before it replies;
it may reply first only while a slow fsync postpones its writes (a busy disk, up to 2 s), and a
power cut (not simulated here) may lose up to the last seconds. `always` fsyncs before replying.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import redis

from service.contract.fields import FrameField
from service.contract.keys import WORKER_GROUP, frames_key
from service.contract.tokens import FRAMES_WRITE, SCOPES, create_token
from worker.bench.service import synthetic_frames
from worker.forward import load_model
from worker.runtime.local import Child, start_api, start_valkey_server, start_worker

ROLES = ("worker", "valkey", "api")
RETRIED_STATUS = frozenset({429, 500, 502, 503, 504})


@dataclass
class Config:
    sessions: int = 4
    rate: float = 20.0  # frames per second per session
    seconds: float = 75.0  # how long the belts post
    workers: int = 2
    method: str = "tikhonov"  # the sessions' main method
    geometry: Any = "thorax-2x16"
    protocol: Any = "skip4"
    grid: tuple[int, int, int] = (16, 32, 32)
    # (fraction of `seconds`, role): SIGKILL and restart, in this order
    kills: tuple[tuple[float, str], ...] = ((0.2, "worker"), (0.45, "valkey"), (0.7, "api"))
    appendfsync: str = "always"  # valkey's AOF fsync policy, as deployed (deploy/base)
    aof: bool = True  # False: the negative control, valkey restarts empty
    max_batch: int = 32  # frames per POST when a belt catches up after an outage
    stall_s: float = 180.0  # give up after this long without progress (retries, drain, close)
    worker_env: dict[str, str] = field(default_factory=dict)


@dataclass
class SessionFigures:
    session: str
    sent: int = 0  # distinct seqs posted at least once
    acknowledged: int = 0  # distinct seqs that got a 2xx
    retries: int = 0  # requests sent again after no 2xx
    unexpected_duplicates: int = 0  # duplicates on a first attempt (seqs this belt never sent)
    refused: list[str] = field(default_factory=list)  # 4xx other than 429 (not retried)
    accepted: int = 0
    duplicate: int = 0
    reconstructed: int = 0
    coalesced: int = 0
    dropped: int = 0
    stream_first_seq: int | None = None  # the stream's oldest frame after checkpoint trims
    pending: int = 0  # frame entries delivered to a worker, not acknowledged, after the drain
    missing: int = 0
    unprocessed: int = 0
    lost: int = 0


@dataclass
class Kill:
    role: str
    at_s: float  # since the belts started
    down_s: float = 0.0  # until the replacement answered (the worker: was started)
    name: str = ""
    recovered_s: float | None = None  # until every session had a live owner again
    owned: int = 0  # sessions the killed worker owned
    # valkey: per session, the seqs acknowledged before the restart that its frame stream
    # (the part not trimmed) lacks right after it
    missing_after: dict[str, list[int]] = field(default_factory=dict)


@dataclass
class Figures:
    config: dict[str, Any]
    date: str = ""
    sessions: list[SessionFigures] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=dict)
    kills: list[Kill] = field(default_factory=list)
    drain_seconds: float = 0.0  # after the belts stopped
    drained: bool = False  # every accepted frame processed (else stalled for `stall_s`)
    released: bool = False  # every closed session released by its worker


TOTALS = ("sent", "acknowledged", "retries", "unexpected_duplicates", "accepted", "duplicate",
          "reconstructed", "coalesced", "dropped", "pending", "missing", "unprocessed", "lost")


class System:
    """valkey (AOF), the API and the workers; `kill(role)` SIGKILLs one and restarts it,
    `stop()` stops what was started (also after a failed start)."""

    def __init__(self, cfg: Config, data_dir: Path, progress: Callable[[str], None]) -> None:
        self.cfg, self.data_dir, self.progress = cfg, data_dir, progress
        self.secret = secrets.token_urlsafe(48)
        self.valkey_config = {"appendonly": "yes" if cfg.aof else "no",
                              "appendfsync": cfg.appendfsync}
        self.valkey: Child | None = None
        self.api: Child | None = None
        self.workers: dict[str, Child] = {}
        self.started = 0

    def start(self) -> None:
        self.valkey = start_valkey_server(self.data_dir / "valkey", config=self.valkey_config)
        self.url = self.valkey.url
        self.port = int(self.url.rsplit(":", 1)[1].split("/")[0])
        self.api = start_api(self.url, self.secret, quiet=True)
        for _ in range(self.cfg.workers):
            self.start_worker()

    def start_worker(self) -> str:
        self.started += 1
        name = f"durability-worker-{self.started}"
        self.workers[name] = start_worker(self.url, {
            "EITMON_WORKER_NAME": name, "EITMON_LOG_LEVEL": "warning",
            "EITMON_SESSIONS_PER_WORKER": str(self.cfg.sessions),
            "EITMON_CHECKPOINT_DIR": str(self.data_dir / "checkpoints"),
            **self.cfg.worker_env})
        return name

    def kill(self, role: str, owners: list[str | None]) -> str:
        """SIGKILL `role` (a worker: the owner of most sessions in `owners`) and start its
        replacement; the name of the one killed."""
        if role == "worker":
            name = max(self.workers, key=owners.count)
            self.workers.pop(name).stop(signal.SIGKILL)
            self.start_worker()
            return name
        if role == "valkey":
            self.valkey.stop(signal.SIGKILL)
            self.valkey = start_valkey_server(self.data_dir / "valkey", self.port,
                                              self.valkey_config)
            return "valkey"
        if role == "api":
            port = int(self.api.url.rsplit(":", 1)[1])
            self.api.stop(signal.SIGKILL)
            self.api = start_api(self.url, self.secret, port=port, quiet=True)
            return "api"
        raise ValueError(f"unknown role {role!r}: one of {', '.join(ROLES)}")

    def stop(self) -> None:
        for child in [*self.workers.values(), self.api, self.valkey]:
            if child is not None:
                child.stop()


class Bench:
    """The sessions, their belts and the checks."""

    def __init__(self, cfg: Config, system: System, frames: np.ndarray,
                 body: dict[str, Any]) -> None:
        self.cfg, self.system, self.frames, self.body = cfg, system, frames, body
        self.admin = create_token(system.secret, SCOPES, 24 * 3600, subject="durability")
        self.acked: dict[str, set[int]] = {}  # per session, the seqs that got a 2xx so far

    def client(self, token: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.system.api.url, trust_env=False, timeout=10.0,
                                 headers={"Authorization": f"Bearer {token}"})

    async def request(self, c: httpx.AsyncClient, method: str, path: str, gone_ok: bool = False,
                      **kw: Any) -> httpx.Response | None:
        """An admin request, retried like a belt's frames until it gets a 2xx (None for a 404
        with `gone_ok`: the session is gone)."""
        deadline = time.monotonic() + self.cfg.stall_s
        while True:
            try:
                r = await c.request(method, path, **kw)
                if gone_ok and r.status_code == 404:
                    return None
                if r.status_code not in RETRIED_STATUS:
                    r.raise_for_status()
                    return r
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{method} {path}: no answer for {self.cfg.stall_s} s")
            await asyncio.sleep(0.5)

    async def open_session(self, c: httpx.AsyncClient) -> str:
        r = await self.request(c, "POST", "/v1/sessions", json=self.body)
        assert r is not None  # a 404 is not gone_ok here
        return r.json()["id"]

    async def infos(self, c: httpx.AsyncClient, sids: list[str]
                    ) -> list[dict[str, Any] | None]:
        """GET /v1/sessions/{id} of each session (None: gone, which valkey restarted empty)."""
        infos = []
        for sid in sids:
            r = await self.request(c, "GET", f"/v1/sessions/{sid}", gone_ok=True)
            infos.append(None if r is None else r.json())
        return infos

    async def until(self, c: httpx.AsyncClient, sids: list[str],
                    done: Callable[[dict[str, Any]], bool], what: str) -> bool:
        """Poll the sessions until `done` holds for each that still exists (True); False after
        `stall_s` without any change in their counters or owners."""
        seen, last_change = None, time.monotonic()
        while True:
            infos = await self.infos(c, sids)
            if all(i is None or done(i) for i in infos):
                return True
            state = [i and (i["counters"], owner(i)) for i in infos]
            if state != seen:
                seen, last_change = state, time.monotonic()
            elif time.monotonic() - last_change > self.cfg.stall_s:
                self.system.progress(f"{what}: no progress for {self.cfg.stall_s} s")
                return False
            await asyncio.sleep(0.5)

    async def belt(self, sid: str, t0: float, fig: SessionFigures) -> set[int]:
        """Post frames as they fall due from `t0` (a batch of those due when behind), each
        batch until it gets a 2xx; stop at a refusal. The acknowledged seqs."""
        token = create_token(self.system.secret, [FRAMES_WRITE], 24 * 3600, subject="belt",
                             sessions=[sid])
        acked = self.acked[sid] = set()
        n, rate = int(self.cfg.seconds * self.cfg.rate), self.cfg.rate
        seq = 0
        async with self.client(token) as c:
            while seq < n:
                due = min(int((time.monotonic() - t0) * rate) + 1, n)
                if due <= seq:
                    await asyncio.sleep(max(t0 + seq / rate - time.monotonic(), 0.001))
                    continue
                count = min(due - seq, self.cfg.max_batch)
                fig.sent = seq + count
                if not await self.post(c, sid, seq, count, fig):
                    break
                acked.update(range(seq, seq + count))
                seq += count
        return acked

    async def post(self, c: httpx.AsyncClient, sid: str, seq: int, count: int,
                   fig: SessionFigures) -> bool:
        """POST frames seq..seq+count-1 until a 2xx (True) or a refusal or `stall_s` of
        failures (False)."""
        idx = np.arange(seq, seq + count) % len(self.frames)
        headers = {"Content-Type": "application/octet-stream", "X-Frame-Count": str(count),
                   "X-Seq-Start": str(seq), "X-Timestamp-Start": repr(seq / self.cfg.rate),
                   "X-Frame-Interval": repr(1 / self.cfg.rate)}
        body = self.frames[idx].tobytes()
        deadline, delay = time.monotonic() + self.cfg.stall_s, 0.05
        for attempt in itertools.count():
            try:
                r = await c.post(f"/v1/sessions/{sid}/frames", content=body, headers=headers)
            except httpx.TransportError:
                r = None
            if r is not None and r.is_success:
                if attempt == 0:
                    fig.unexpected_duplicates += len(r.json()["duplicates"])
                return True
            if r is not None and r.status_code not in RETRIED_STATUS:
                fig.refused.append(f"seq {seq}: {r.status_code} {r.text[:200]}")
                return False
            if time.monotonic() > deadline:
                break
            fig.retries += 1
            await asyncio.sleep(delay)
            delay = min(2 * delay, 1.0)
        fig.refused.append(f"seq {seq}: no 2xx for {self.cfg.stall_s} s")
        return False

    async def killer(self, c: httpx.AsyncClient, sids: list[str], t0: float,
                     out: list[Kill]) -> None:
        for fraction, role in self.cfg.kills:
            await asyncio.sleep(max(t0 + fraction * self.cfg.seconds - time.monotonic(), 0))
            owners = [owner(i) for i in await self.infos(c, sids)]
            kill = Kill(role, time.monotonic() - t0)
            kill.name = await asyncio.to_thread(self.system.kill, role, owners)
            kill.owned = owners.count(kill.name)
            if role == "valkey":
                for sid in sids:
                    before = set(self.acked[sid])
                    stream = await asyncio.to_thread(self.stream_seqs, sid)
                    kill.missing_after[sid] = missing(before, stream)
            kill.down_s = time.monotonic() - t0 - kill.at_s
            if await self.until(c, sids, lambda i, gone=kill.name: owner(i) not in (None, gone),
                                "takeover"):
                kill.recovered_s = time.monotonic() - t0 - kill.at_s
            self.system.progress(f"{role} ({kill.name}) killed at {kill.at_s:.1f} s, "
                                 f"restarted after {kill.down_s:.1f} s; every session owned "
                                 f"again after {kill.recovered_s or -1:.1f} s")
            out.append(kill)

    def pending(self, sid: str) -> int:
        """Entries of the session's frame stream delivered to a worker and not acknowledged."""
        client = redis.Redis.from_url(self.system.url)
        try:
            return int(client.xpending(frames_key(sid), WORKER_GROUP)["pending"])
        except redis.ResponseError:  # no stream or group: the session is gone
            return 0
        finally:
            client.close()

    def stream_seqs(self, sid: str) -> list[int]:
        """The seqs of the frames left in the session's stream (oldest first)."""
        client = redis.Redis.from_url(self.system.url)
        seqs, start = [], "-"
        try:
            while entries := client.xrange(frames_key(sid), start, "+", count=1000):
                seqs += [int(f[FrameField.SEQ.value.encode()]) for _, f in entries
                         if FrameField.SEQ.value.encode() in f]
                start = "(" + entries[-1][0].decode()
        finally:
            client.close()
        return seqs

    async def run(self) -> Figures:
        fig = Figures(config=asdict(self.cfg),
                      date=datetime.now(UTC).isoformat(timespec="seconds"))
        progress = self.system.progress
        async with self.client(self.admin) as c:
            sids = [await self.open_session(c) for _ in range(self.cfg.sessions)]
            fig.sessions = [SessionFigures(s) for s in sids]
            if not await self.until(c, sids, lambda i: owner(i) is not None, "claiming"):
                raise RuntimeError("the workers did not claim every session")
            progress(f"{len(sids)} sessions claimed; belts start")
            t0 = time.monotonic()
            *acked, _ = await asyncio.gather(
                *(self.belt(s, t0, f) for s, f in zip(sids, fig.sessions, strict=True)),
                self.killer(c, sids, t0, fig.kills))
            progress("belts done; waiting for the workers")
            t1 = time.monotonic()
            fig.drained = await self.until(c, sids, lambda i: i["lag"]["frames"] == 0,
                                           "draining")
            fig.drain_seconds = time.monotonic() - t1
            streams = [await asyncio.to_thread(self.stream_seqs, s) for s in sids]
            for f, s in zip(fig.sessions, sids, strict=True):
                f.pending = await asyncio.to_thread(self.pending, s)
                await self.request(c, "DELETE", f"/v1/sessions/{s}", gone_ok=True)
            fig.released = await self.until(c, sids, lambda i: owner(i) is None, "closing")
            for f, info, seqs, stream in zip(fig.sessions, await self.infos(c, sids),
                                             acked, streams, strict=True):
                account(f, info["counters"] if info else {}, seqs, stream)
        fig.totals = {k: sum(getattr(f, k) for f in fig.sessions) for k in TOTALS}
        return fig


def owner(info: dict[str, Any] | None) -> str | None:
    """The worker that holds a session's lease (GET /v1/sessions/{id}), or None."""
    return ((info or {}).get("worker") or {}).get("id")


def missing(acked: set[int], stream: list[int]) -> list[int]:
    """The acknowledged seqs absent from the part of a frame stream that was not trimmed."""
    kept, first = set(stream), stream[0] if stream else 0
    return sorted(s for s in acked if s >= first and s not in kept)


def account(fig: SessionFigures, counters: dict[str, Any], acked: set[int],
            stream: list[int]) -> None:
    """Fill in the counters and the frames lost (module docstring)."""
    for name in ("accepted", "duplicate", "reconstructed", "coalesced", "dropped"):
        setattr(fig, name, int(counters.get(name, 0)))
    fig.acknowledged = len(acked)
    fig.stream_first_seq = stream[0] if stream else None
    fig.missing = max(len(missing(acked, stream)), fig.acknowledged - fig.accepted)
    fig.unprocessed = max(fig.accepted - fig.reconstructed - fig.coalesced - fig.dropped, 0)
    fig.lost = fig.missing + fig.unprocessed


def run(cfg: Config, progress: Callable[[str], None] = print) -> Figures:
    """Start everything, run the belts through the kills, check, stop everything."""
    unknown = {role for _, role in cfg.kills} - set(ROLES)
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}: kills are among {', '.join(ROLES)}")
    model = load_model(geometry=cfg.geometry, protocol=cfg.protocol, grid=cfg.grid,
                       progress=True)
    body = {"geometry": model.spec["geometry"], "protocol": model.spec["protocol"],
            "grid": list(cfg.grid), "method": cfg.method, "realtime": "realtime",
            "reference": {"mode": "explicit", "voltages": model.reference_voltages.tolist()}}
    with tempfile.TemporaryDirectory(prefix="eitmon-durability-") as data:
        system = System(cfg, Path(data), progress)
        try:
            system.start()
            return asyncio.run(Bench(cfg, system, synthetic_frames(model, 400), body).run())
        finally:
            system.stop()


def markdown(fig: Figures) -> str:
    """The report: the kills, then one row per session and the totals."""
    cfg = fig.config
    persistence = f"AOF `appendfsync {cfg['appendfsync']}`" if cfg["aof"] else "without AOF"
    drain = (f"Drained {fig.drain_seconds:.1f} s after the belts stopped" if fig.drained else
             f"Not drained: no progress for {cfg['stall_s']:g} s, "
             f"{fig.drain_seconds:.1f} s after the belts stopped")
    released = "" if fig.released else "; not every closed session was released"
    lines = [f"# Durability, {fig.date}", "",
             f"{cfg['sessions']} sessions x {cfg['rate']:g} frames/s for {cfg['seconds']:g} s, "
             f"{cfg['workers']} worker(s), main method `{cfg['method']}`, valkey {persistence}. "
             f"{drain}{released}.", "",
             "| SIGKILL | at (s) | sessions it owned | restarted after (s) | every session owned "
             "again after (s) |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {k.role} ({k.name}) | {k.at_s:.1f} | {k.owned if k.role == 'worker' else '-'}"
              f" | {k.down_s:.1f} | {'-' if k.recovered_s is None else f'{k.recovered_s:.1f}'} |"
              for k in fig.kills]
    cols = ("acknowledged", "accepted", "duplicate", "reconstructed", "coalesced", "dropped",
            "retries", "pending", "missing", "unprocessed", "lost")
    lines += [f"\nAcknowledged before the valkey restart, absent from the stream right after it: "
              f"session {sid[:8]} seqs {seqs}" for k in fig.kills
              for sid, seqs in k.missing_after.items() if seqs]
    lines += ["", "| session | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    rows = [(f.session[:8], asdict(f)) for f in fig.sessions] + [("total", fig.totals)]
    lines += [f"| {name} | " + " | ".join(str(d[c]) for c in cols) + " |" for name, d in rows]
    refused = [r for f in fig.sessions for r in f.refused]
    if refused:
        lines += ["", "Refused or abandoned batches:", *(f"- {r}" for r in refused)]
    return "\n".join(lines) + "\n"
