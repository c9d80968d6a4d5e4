"""Every write the worker makes for a session, each checked against its lease in Lua (the
scripts live in `service.contract.scripts`).

The scripts compare the session's lease with the exact `"<epoch>:<worker>"` value this worker
was given; a worker whose lease expired or was taken (a larger epoch) is refused before it
writes anything, so it can neither publish, count, acknowledge nor commit a checkpoint.

`publish_parameters` appends one breath's parameters (the `breath` policy).

`commit` is the one per-frame write: it acknowledges frame-stream entries, increments a counter,
updates the progress hash and appends a result, atomically, so a frame is counted exactly when
it is acknowledged, and at most once (only entries that XACK acknowledged are counted). The
result's `latency_ms` (frame accepted -> published) and `lag_frames` are filled in by the
script from the Redis clock and the counters.

Keys a worker creates for a closed session get `EXPIREAT expires_at` (the retention rule).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from redis import Redis
from redis.client import Pipeline

from service.contract.codecs import (
    ParametersEntry,
    Result,
    encode_parameters,
    encode_result,
    flat,
)
from service.contract.fields import ProgressField
from service.contract.keys import (
    PARAMETERS_MAXLEN,
    RESULTS_MAXLEN,
    WORKER_GROUP,
    counters_key,
    frames_key,
    lease_key,
    parameters_key,
    progress_key,
    results_key,
    session_key,
)
from service.contract.scripts import GONE, LOST, registered

# Progress-hash fields this worker writes besides the per-frame ones (see ProgressField).
CHECKPOINT = ProgressField.CHECKPOINT.value
METHOD = ProgressField.METHOD.value


class LeaseLost(Exception):
    """The lease was taken or expired (or the session's keys are gone): stop owning it."""

    def __init__(self, sid: str, code: int) -> None:
        super().__init__(f"session {sid}: " + ("lease lost" if code == LOST else "session gone"))
        self.sid, self.code = sid, code


class Fenced:
    """The fenced writes of one worker."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        scripts = registered(redis)
        self._commit, self._checkpoint = scripts.commit, scripts.checkpoint
        self._parameters = scripts.parameters

    def commit(self, sid: str, lease_value: bytes, *, counter: str = "",
               ack: Sequence[str] = (), progress: Mapping[str, Any] | None = None,
               result: Result | None = None, frame_id: str = "",
               client: Pipeline | None = None) -> int | None:
        """Acknowledge `ack`, add the number acknowledged to `counter`, record progress and
        publish, in one step; the lag in frames (None when queued on a pipeline: check the
        reply with `check`)."""
        prog = [x for kv in (progress or {}).items() for x in kv]
        fields = flat(encode_result(result)) if result else []
        keys = [lease_key(sid), session_key(sid), counters_key(sid),
                progress_key(sid), frames_key(sid), results_key(sid)]
        args = [lease_value, WORKER_GROUP, RESULTS_MAXLEN, counter, frame_id,
                len(ack), *ack, len(prog), *prog, *fields]
        reply = self._commit(keys=keys, args=args, client=client)
        return None if client is not None else check(sid, reply)

    def publish_parameters(self, sid: str, lease_value: bytes, entry: ParametersEntry) -> None:
        """Append one breath's parameters to the session's parameters stream."""
        keys = [lease_key(sid), session_key(sid), parameters_key(sid)]
        check(sid, self._parameters(keys=keys, args=[lease_value, PARAMETERS_MAXLEN,
                                                     *flat(encode_parameters(entry))]))

    def commit_checkpoint(self, sid: str, lease_value: bytes, name: str, stream_id: str) -> None:
        """Make `name` the session's checkpoint; trim the frames it no longer needs."""
        keys = [lease_key(sid), session_key(sid), progress_key(sid),
                frames_key(sid)]
        check(sid, self._checkpoint(keys=keys, args=[lease_value, WORKER_GROUP, name,
                                                     stream_id]))


def check(sid: str, reply: Any) -> int:
    """A script's reply, or LeaseLost when it refused to write."""
    if isinstance(reply, Exception):
        raise reply
    code = int(reply)
    if code in (LOST, GONE):
        raise LeaseLost(sid, code)
    return code
