"""The worker: its collaborators, wired once, and its four threads.

- control (`control.py`): leases, claims, takeovers, eviction, the heartbeat;
- setup (`startup.py`): opens claimed sessions one at a time (model load, checkpoint restore,
  replay), so a cold model build never delays the other sessions;
- intake (`intake.py`): reads frames, recovers pending entries no session took, publishes
  previews;
- compute (`compute.py`): the main method, checkpoints, session ends.

Each thread gets only what it uses: the session registry (`registry.py`), the lease and fenced
writers, the failure recorder (`failures.py`), the stop events. The reconstruction methods are
a constructor argument (name -> factory; default: every method `worker.recon.base` registers).

`stop()` (SIGTERM, SIGINT) is graceful: no new claims, the intake stops reading, the compute
thread finishes its current frame, checkpoints and releases every session; `run()` returns 0.
Frames read but not yet reconstructed stay pending in the consumer group for the next owner.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping

from redis import Redis
from redis.exceptions import RedisError

from service.contract.keys import session_key
from worker.runtime import checkpoint
from worker.runtime.builds import ModelBuilder
from worker.runtime.compute import Compute
from worker.runtime.config import WorkerConfig
from worker.runtime.control import Control
from worker.runtime.failures import SessionFailures
from worker.runtime.fenced import Fenced
from worker.runtime.health import ComputeClock, Heartbeat
from worker.runtime.intake import Intake, Previews
from worker.runtime.lease import Leases
from worker.runtime.methods import (
    PREVIEW_PREFERENCE,
    Factory,
    MethodTable,
    ModelCache,
    registered,
    registered_tidal,
    resolve_device,
)
from worker.runtime.quality import QualityMonitor
from worker.runtime.registry import SessionRegistry
from worker.runtime.startup import SessionOpener, Setup

log = logging.getLogger("eitmon.worker")


class Worker:
    """One worker process's sessions and threads."""

    def __init__(self, cfg: WorkerConfig, redis: Redis,
                 methods: Mapping[str, Factory] | None = None) -> None:
        self.cfg, self.redis = cfg, redis
        self.device = resolve_device(cfg.device)
        table = (MethodTable(registered(), self.device, registered_tidal()) if methods is None
                 else MethodTable(methods, self.device))
        preview = table.resolve(cfg.preview_method, PREVIEW_PREFERENCE)
        if preview != cfg.preview_method:
            log.warning("preview method %s is not available; using %s", cfg.preview_method,
                        preview)
        models = ModelCache(table, preview,
                            ModelBuilder(cfg.build_timeout_s, cfg.build_memory_mb << 20))
        self.registry = SessionRegistry(cfg.sessions_per_worker, models)
        self.stopping = threading.Event()  # no new work: finish, checkpoint, release
        self.done = threading.Event()  # sessions released: the control thread may stop
        self.failed = False
        leases = Leases(redis, cfg.worker_name, cfg.lease_ms)
        fenced = Fenced(redis)
        failures = SessionFailures(redis, self.registry, cfg.max_session_failures,
                                   cfg.session_retention_s, cfg.retry_backoff_s)
        previews = Previews(redis, fenced, self.registry)
        self.clock = ComputeClock()
        self.setup = Setup(SessionOpener(redis, cfg.worker_name, cfg.checkpoints, models, table,
                                         previews),
                           self.registry, leases, failures, cfg.retry_backoff_s)
        self.control = Control(cfg, redis, leases, self.registry, self.setup,
                               Heartbeat(redis, cfg.worker_name, self.clock, cfg.stall_timeout_s,
                                         cfg.heartbeat_ttl_s),
                               self.stopping, self.done)
        self.intake = Intake(redis, cfg.worker_name, cfg.read_count, cfg.scan_interval_s,
                             self.registry, previews, failures, self.stopping)
        quality = (QualityMonitor(fenced, table, preview, cfg.quality_window, cfg.quality_every,
                                  cfg.quality_drift_s)
                   if cfg.quality_window else None)
        self.compute = Compute(cfg, self.device, redis, fenced, leases, self.registry, failures,
                               self.clock, self.stopping, quality)

    def stop(self) -> None:
        self.stopping.set()
        self.registry.notify()

    def run(self) -> int:
        """Run until `stop()`; 0 after a graceful stop, 1 when a thread failed."""
        self.sweep_checkpoints()
        if self.device == "cpu" and self.cfg.fused:  # build D2IP's kernels now, not in a session
            from worker.recon.d2ip.cpu import library as fused

            fused.set_threads(self.cfg.kernel_threads or None)
            log.info("D2IP fused CPU kernels: %s", f"ready, up to {fused.threads()} thread(s)"
                     if fused.available() else "off")
        log.info("worker %s: started (device %s, up to %d sessions, lease %d ms)",
                 self.cfg.worker_name, self.device, self.cfg.sessions_per_worker,
                 self.cfg.lease_ms)
        self.clock.tick()  # the compute thread's first step starts now
        control = self._thread("control", self.control.run)
        intake = self._thread("intake", self.intake.run)
        compute = self._thread("compute", self.compute.run)
        self._thread("setup", self.setup.run, daemon=True)
        while not self.stopping.wait(0.5):
            pass
        intake.join()
        compute.join()
        self.done.set()
        control.join()
        self.setup.close()
        log.info("worker %s: stopped", self.cfg.worker_name)
        return 1 if self.failed else 0

    def _thread(self, name: str, target: Callable[[], None], daemon: bool = False
                ) -> threading.Thread:
        def body() -> None:
            try:
                target()
            except Exception:
                log.exception("worker %s: %s thread failed", self.cfg.worker_name, name)
                self.failed = True
                self.stop()
                self.done.set()

        thread = threading.Thread(target=body, name=name, daemon=daemon)
        thread.start()
        return thread

    def sweep_checkpoints(self) -> None:
        """Delete checkpoint folders of sessions whose keys have expired."""
        dirs = checkpoint.session_dirs(self.cfg.checkpoints)
        if not dirs:
            return
        try:
            with self.redis.pipeline(transaction=False) as pipe:
                for folder in dirs:
                    pipe.exists(session_key(folder.name))
                alive = pipe.execute()
        except RedisError:
            return
        for folder, exists in zip(dirs, alive, strict=True):
            if not exists:
                checkpoint.remove_session(folder)
