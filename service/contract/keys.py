"""Every Redis key of the system, and the workers' consumer group.

Every per-session key carries the session id as a Redis Cluster hash tag (`{sid}`), so all
keys of one session live in one slot and the Lua scripts that touch several of them stay
atomic.

Per session `sid` (32 lowercase hex digits):

- `eitmon:session:{sid}` HASH, written by the API (fields: `SessionField`). `config` holds the
  resolved settings as JSON (`SessionConfig`), so the worker needs nothing else to start. A
  worker marks a session it cannot reconstruct `failed` (status, `failure_reason`).
- `eitmon:counters:{sid}` HASH of integers (`Counter`). The API increments `accepted`,
  `duplicate`, `rejected` and `rejected:<reason>`; the worker increments `reconstructed`,
  `coalesced` and `failures`.
- `eitmon:frames:{sid}` STREAM, appended by the API only, one entry per frame
  (`codecs.encode_frame`), plus in-band `reference` and `close` entries in the order they
  happened (the `close` entry is the worker's close message). Consumer group `WORKER_GROUP` is
  created by the API with the session (from id 0). The API never trims it; the worker XACKs
  what it processed and trims (XTRIM MINID / XDEL) only entries older than the frames its
  latest weight checkpoint still needs for a replay.
- `eitmon:results:{sid}` STREAM, appended by the worker with `XADD ... MAXLEN ~ RESULTS_MAXLEN`
  (`codecs.encode_result`); the API reads it with XREAD for the viewers.
- `eitmon:parameters:{sid}` STREAM, appended by the worker under the `breath` policy when a
  breath ends, with `XADD ... MAXLEN ~ PARAMETERS_MAXLEN` (`codecs.encode_parameters`: the
  breath's parameters as JSON); the API serves it (GET .../parameters) and to the viewers.
- `eitmon:progress:{sid}` HASH, written by the worker after each processed frame
  (`ProgressField`).
- `eitmon:lease:{sid}` STRING, the worker's ownership lease (`codecs.encode_lease`), set with
  `SET ... NX PX`; `eitmon:epoch:{sid}` is the fencing counter (INCR on every acquisition).

Global:

- `eitmon:sessions` ZSET of session ids scored by creation time (unix seconds).
- `eitmon:revoked-tokens` ZSET of revoked token ids (`jti`), scored by the unix time after
  which the token has expired anyway (then the entry is pruned). The API refuses those tokens
  and closes the WebSockets opened with them (`eitmon token revoke JTI`).
- `eitmon:control` STREAM with one entry per OPEN session (`codecs.encode_control`), so XLEN =
  open sessions (the autoscaler's signal; never capped). Workers claim sessions with
  `XREADGROUP GROUP WORKER_GROUP <worker> ... STREAMS eitmon:control >` and leave the entry
  pending while they own the session; a dead worker's entries are taken over with XAUTOCLAIM
  once its lease expired. Closing a session XACKs and XDELs its entry (id in the session hash
  field `control_id`); a worker that claims an entry whose session is closed or gone XACKs and
  XDELs it itself. The group is created at id 0 with MKSTREAM by whoever comes first (the API
  on the first session; BUSYGROUP is fine).

Retention: closing a session sets `expires_at` in its hash and EXPIREs its keys after
`Settings.session_retention_s` (24 h by default); a worker that creates a key of a closed
session afterwards (results, progress) sets `EXPIREAT expires_at` on it too.
"""

from __future__ import annotations

import re

PREFIX = "eitmon"
WORKER_GROUP = "eitmon-workers"  # consumer group on the control stream and every frame stream
RESULTS_MAXLEN = 200
PARAMETERS_MAXLEN = 1000  # breaths (about an hour at 14 breaths a minute)

SESSIONS_INDEX = f"{PREFIX}:sessions"
CONTROL_STREAM = f"{PREFIX}:control"
REVOKED_TOKENS = f"{PREFIX}:revoked-tokens"

SESSION_ID = re.compile(r"^[0-9a-f]{32}$")  # a session id: uuid4().hex, as the API makes them


def heartbeat_key(worker: str) -> str:
    """`eitmon:heartbeat:<worker>`: the unix time of the worker's last heartbeat (with a TTL);
    the worker's liveness probe reads it."""
    return f"{PREFIX}:heartbeat:{worker}"


def _tagged(kind: str, sid: str) -> str:
    return f"{PREFIX}:{kind}:{{{sid}}}"


def session_key(sid: str) -> str:
    return _tagged("session", sid)


def counters_key(sid: str) -> str:
    return _tagged("counters", sid)


def frames_key(sid: str) -> str:
    return _tagged("frames", sid)


def results_key(sid: str) -> str:
    return _tagged("results", sid)


def parameters_key(sid: str) -> str:
    return _tagged("parameters", sid)


def progress_key(sid: str) -> str:
    return _tagged("progress", sid)


def lease_key(sid: str) -> str:
    return _tagged("lease", sid)


def epoch_key(sid: str) -> str:
    return _tagged("epoch", sid)


def session_keys(sid: str) -> list[str]:
    """Every key of a session that closing puts under the retention expiry."""
    return [session_key(sid), counters_key(sid), frames_key(sid), results_key(sid),
            progress_key(sid), epoch_key(sid), parameters_key(sid)]
