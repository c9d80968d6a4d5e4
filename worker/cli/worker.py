"""`eitmon worker`: the reconstruction worker (see docs/worker.md)."""

from __future__ import annotations


def worker() -> None:
    """Reconstruct the frames of the sessions this worker claims, until SIGTERM.

    Configured by the environment (docs/worker.md): REDIS_URL, EITMON_WORKER_NAME,
    EITMON_CACHE_DIR, EITMON_CHECKPOINT_DIR, EITMON_DEVICE (cpu, cuda, auto),
    EITMON_SESSIONS_PER_WORKER, EITMON_LEASE_MS, EITMON_LEASE_RENEW_MS,
    EITMON_CHECKPOINT_EVERY, EITMON_IDLE_EVICT_S, EITMON_SCAN_INTERVAL_S,
    EITMON_PREVIEW_METHOD, EITMON_READ_COUNT, EITMON_TORCH_THREADS, EITMON_COMPUTE_NICE,
    EITMON_LOG_LEVEL.
    """
    from worker.runtime.main import run

    run()
