"""The worker: the registry of owned sessions and its four threads.

- control (`control.py`): leases, claims, takeovers, eviction;
- setup: opens claimed sessions one at a time (model load, checkpoint restore, replay), so a
  cold model build never delays the other sessions;
- intake (`intake.py`): reads frames, publishes previews;
- compute (`compute.py`): the main method, checkpoints, session ends.

`stop()` (SIGTERM, SIGINT) is graceful: no new claims, the intake stops reading, the compute
thread finishes its current frame, checkpoints and releases every session; `run()` returns 0.
Frames read but not yet reconstructed stay pending in the consumer group for the next owner.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from redis import Redis
from redis.exceptions import RedisError

from service import streams
from worker.runtime import checkpoint, methods
from worker.runtime.compute import Compute
from worker.runtime.config import WorkerConfig
from worker.runtime.control import Control
from worker.runtime.fenced import Fenced, LeaseLost
from worker.runtime.intake import Intake
from worker.runtime.lease import Lease, Leases
from worker.runtime.session import Session
from worker.runtime.startup import open_session

log = logging.getLogger("eitmon.worker")

SETUP_BACKOFF_S = 60.0  # a session that failed to start is not retried here for this long


class Worker:
    """One worker process's sessions and threads."""

    def __init__(self, cfg: WorkerConfig, redis: Redis | None = None) -> None:
        self.cfg = cfg
        self.name = cfg.worker_name
        self.redis = redis or Redis.from_url(cfg.redis_url, socket_connect_timeout=2.0,
                                             health_check_interval=30)
        self.leases = Leases(self.redis, self.name, cfg.lease_ms)
        self.fenced = Fenced(self.redis)
        self.device = methods.resolve_device(cfg.device)
        preview = methods.resolve(cfg.preview_method, methods.PREVIEW_PREFERENCE)
        if preview != cfg.preview_method:
            log.warning("preview method %s is not available; using %s", cfg.preview_method,
                        preview)
        self.models = methods.ModelCache(preview, self.device)
        self.stopping = threading.Event()  # no new work: finish, checkpoint, release
        self.done = threading.Event()  # sessions released: the control thread may stop
        self.failed = False
        self.late: queue.Queue[tuple[Session, Any]] = queue.Queue()  # straggler entries
        self._lock = threading.Lock()
        self._work = threading.Condition()
        self._held: dict[str, Lease] = {}  # every lease this worker holds
        self._live: dict[str, Session] = {}  # sessions past setup
        self._setup: queue.Queue[tuple[Lease, str] | None] = queue.Queue()
        self._backoff: dict[str, float] = {}

    # --- registry ------------------------------------------------------------------------

    def sessions(self) -> list[Session]:
        with self._lock:
            return list(self._live.values())

    def held_leases(self) -> list[Lease]:
        with self._lock:
            return list(self._held.values())

    def holds(self, sid: str) -> bool:
        with self._lock:
            return sid in self._held or self._backoff.get(sid, 0.0) > time.monotonic()

    def owns(self, s: Session) -> bool:
        with self._lock:
            return self._live.get(s.sid) is s

    def free_slots(self) -> int:
        with self._lock:
            return self.cfg.sessions_per_worker - len(self._held)

    def start(self, lease: Lease, how: str) -> None:
        """A lease was just acquired: open the session on the setup thread."""
        with self._lock:
            self._held[lease.sid] = lease
        self._setup.put((lease, how))

    def lose(self, lease_or_session: Lease | Session, why: Any) -> None:
        """The lease is gone: stop owning the session at once (no checkpoint, no release)."""
        lease = (lease_or_session.lease if isinstance(lease_or_session, Session)
                 else lease_or_session)
        with self._lock:
            if self._held.get(lease.sid) != lease:
                return
            del self._held[lease.sid]
            s = self._live.get(lease.sid)
        if s is not None and s.lease == lease:
            s.ending = "lost"
            self.forget(s)
        log.warning("session %s: %s (epoch %d); no longer owned", lease.sid, why, lease.epoch)

    def forget(self, s: Session) -> None:
        """Drop a session from memory (idempotent)."""
        with self._lock:
            if self._live.get(s.sid) is not s:
                return
            del self._live[s.sid]
            if self._held.get(s.sid) == s.lease:
                del self._held[s.sid]
        self.models.release(s.config)

    def notify(self) -> None:
        with self._work:
            self._work.notify_all()

    def wait_for_work(self, timeout: float) -> None:
        with self._work:
            self._work.wait(timeout)

    # --- threads -------------------------------------------------------------------------

    def stop(self) -> None:
        self.stopping.set()
        self.notify()

    def run(self) -> int:
        """Run until `stop()`; 0 after a graceful stop, 1 when a thread failed."""
        self.sweep_checkpoints()
        if self.device == "cpu":  # build D2IP's fused CPU kernels now, not in the first session
            from worker.recon.d2ip.cpu import library as fused

            fused.set_threads(self.cfg.kernel_threads or None)
            log.info("D2IP fused CPU kernels: %s", f"ready, up to {fused.threads()} thread(s)"
                     if fused.available() else "off")
        log.info("worker %s: started (device %s, up to %d sessions, lease %d ms)", self.name,
                 self.device, self.cfg.sessions_per_worker, self.cfg.lease_ms)
        control = self._thread("control", Control(self).run)
        intake = self._thread("intake", Intake(self).run)
        compute = self._thread("compute", Compute(self).run)
        self._thread("setup", self._setup_loop, daemon=True)
        while not self.stopping.wait(0.5):
            pass
        intake.join()
        compute.join()
        self.done.set()
        control.join()
        for lease in self.held_leases():  # sessions still in setup
            self._release(lease)
        self._setup.put(None)
        log.info("worker %s: stopped", self.name)
        return 1 if self.failed else 0

    def _thread(self, name: str, target: Callable[[], None], daemon: bool = False
                ) -> threading.Thread:
        def body() -> None:
            try:
                target()
            except Exception:
                log.exception("worker %s: %s thread failed", self.name, name)
                self.failed = True
                self.stop()
                self.done.set()

        t = threading.Thread(target=body, name=name, daemon=daemon)
        t.start()
        return t

    def _setup_loop(self) -> None:
        while (job := self._setup.get()) is not None:
            lease, how = job
            if lease not in self.held_leases():
                continue
            t0 = time.monotonic()
            try:
                s, replayed = open_session(self, lease)
            except LeaseLost as e:
                self.lose(lease, e)
                continue
            except Exception:
                log.exception("session %s: could not start; released", lease.sid)
                self._release(lease)
                with self._lock:
                    self._backoff[lease.sid] = time.monotonic() + SETUP_BACKOFF_S
                continue
            origin = ("the start of the stream" if s.position == checkpoint.START
                      else f"checkpoint {s.position}")
            with self._lock:
                owned = self._held.get(lease.sid) == lease
                if owned:
                    self._live[lease.sid] = s
            if not owned:  # lost during setup
                self.models.release(s.config)
                continue
            log.info("session %s: %s (epoch %d, method %s, preview %s, from %s, %d entries "
                     "replayed, %.1f s)", lease.sid, how, lease.epoch, s.main_method,
                     s.preview_method, origin, replayed, time.monotonic() - t0)
            self.notify()

    def _release(self, lease: Lease) -> None:
        with self._lock:
            if self._held.get(lease.sid) == lease:
                del self._held[lease.sid]
        try:
            self.leases.release(lease)
        except RedisError as e:
            log.warning("session %s: release failed (%s); the lease will expire", lease.sid,
                        type(e).__name__)

    def sweep_checkpoints(self) -> None:
        """Delete checkpoint folders of sessions whose keys have expired."""
        dirs = checkpoint.session_dirs(self.cfg.checkpoints)
        if not dirs:
            return
        try:
            with self.redis.pipeline(transaction=False) as p:
                for d in dirs:
                    p.exists(streams.session_key(d.name))
                alive = p.execute()
        except RedisError:
            return
        for d, exists in zip(dirs, alive, strict=True):
            if not exists:
                checkpoint.remove_session(d)
