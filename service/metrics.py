"""Prometheus metrics of the API process (the default registry, exposed at /metrics).

No label ever carries a session id, token or patient label.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

FRAMES_ACCEPTED = Counter("eitmon_frames_accepted_total", "Frames queued to Redis")
FRAMES_DUPLICATE = Counter("eitmon_frames_duplicate_total",
                           "Frames acknowledged as duplicates (seq <= last accepted), not queued")
FRAMES_REJECTED = Counter("eitmon_frames_rejected_total",
                          "Rejected frame requests (a rejected batch counts once), by reason",
                          ["reason"])
QUEUE_LAG = Histogram("eitmon_queue_lag_frames",
                      "Frames accepted but not yet reconstructed or coalesced, seen at ingest",
                      buckets=(0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000))
RECON_LATENCY = Histogram("eitmon_reconstruction_latency_seconds",
                          "Frame accepted -> volume published, from results read for viewers",
                          ["kind"],
                          buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
VIEWERS = Gauge("eitmon_viewers_connected", "Connected WebSocket viewers")
SESSIONS_OPENED = Counter("eitmon_sessions_opened_total", "Sessions created")
SESSIONS_CLOSED = Counter("eitmon_sessions_closed_total", "Sessions closed")
SESSIONS_IDLE_CLOSED = Counter("eitmon_sessions_idle_closed_total",
                               "Sessions closed by the idle expiry (also in sessions_closed)")
WS_REFUSED = Counter("eitmon_ws_refused_total",
                     "WebSocket viewers refused or gone before streaming, by reason", ["reason"])
REDIS_FULL = Counter("eitmon_redis_full_total",
                     "Requests answered 503 redis_full: Redis refused a write (maxmemory)")
