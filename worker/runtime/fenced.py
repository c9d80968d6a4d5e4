"""Every write the worker makes for a session, each checked against its lease in Lua.

The scripts compare the session's lease with the exact `"<epoch>:<worker>"` value this worker
was given; a worker whose lease expired or was taken (a larger epoch) is refused before it
writes anything, so it can neither publish, count, acknowledge nor commit a checkpoint.

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

from service import streams

LOST, GONE = -1, -2
# Progress-hash fields this worker adds to the contract (ProgressField): the committed
# checkpoint's file name (and, as `checkpoint_id`, the last frame-stream id it covers), and
# the main method in use.
CHECKPOINT = "checkpoint"
METHOD = "method"

_PRELUDE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if redis.call('EXISTS', KEYS[2]) == 0 then return -2 end
local function expire_with_session(...)
  local exp = redis.call('HGET', KEYS[2], 'expires_at')
  if exp then
    for _, k in ipairs({...}) do redis.call('EXPIREAT', k, math.ceil(tonumber(exp))) end
  end
end
"""

# KEYS: lease, session, counters, progress, frames, results.
# ARGV: lease value, group, results maxlen, counter field ('' = none), frame id ('' = none),
#       n_ack, ack ids..., n_progress, progress field/value..., result field/value... (none =
#       no result). The counter grows by the number of entries XACK acknowledged, and with
#       acks requested the result is published only if one was, so a retried commit never
#       counts or publishes twice. Returns the lag in frames, -1 or -2.
COMMIT_LUA = _PRELUDE + """
local i = 6
local n_ack = tonumber(ARGV[i])
local acked = 0
for j = i + 1, i + n_ack, 1000 do
  acked = acked + redis.call('XACK', KEYS[5], ARGV[2],
                             unpack(ARGV, j, math.min(j + 999, i + n_ack)))
end
if n_ack > 0 and acked == 0 then return 0 end
i = i + n_ack + 1
if ARGV[4] ~= '' and acked > 0 then redis.call('HINCRBY', KEYS[3], ARGV[4], acked) end
local n_progress = tonumber(ARGV[i])
if n_progress > 0 then redis.call('HSET', KEYS[4], unpack(ARGV, i + 1, i + n_progress)) end
i = i + n_progress + 1
local c = redis.call('HMGET', KEYS[3], 'accepted', 'reconstructed', 'coalesced')
local lag = math.max((tonumber(c[1]) or 0) - (tonumber(c[2]) or 0) - (tonumber(c[3]) or 0), 0)
if i <= #ARGV then
  local t = redis.call('TIME')
  local now_ms = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
  local frame_ms = tonumber(string.match(ARGV[5], '^(%d+)-'))
  local fields = {}
  for j = i, #ARGV, 2 do
    local v = ARGV[j + 1]
    if ARGV[j] == 'lag_frames' then v = tostring(lag)
    elseif ARGV[j] == 'latency_ms' and frame_ms then
      v = string.format('%.3f', math.max(now_ms - frame_ms, 0))
    end
    fields[#fields + 1] = ARGV[j]
    fields[#fields + 1] = v
  end
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[3], '*', unpack(fields))
end
expire_with_session(KEYS[4], KEYS[6])
return lag
"""

# KEYS: lease, session, progress, frames. ARGV: lease value, group, file name, stream id.
# Records the checkpoint and trims the frame stream below it (and below any pending entry).
CHECKPOINT_LUA = _PRELUDE + """
local function older(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as < bs)
end
redis.call('HSET', KEYS[3], 'checkpoint', ARGV[3], 'checkpoint_id', ARGV[4])
local minid = ARGV[4]
local pending = redis.call('XPENDING', KEYS[4], ARGV[2])
if pending[2] and older(pending[2], minid) then minid = pending[2] end
if minid ~= '0-0' then redis.call('XTRIM', KEYS[4], 'MINID', '~', minid) end
expire_with_session(KEYS[3])
return 1
"""


class LeaseLost(Exception):
    """The lease was taken or expired (or the session's keys are gone): stop owning it."""

    def __init__(self, sid: str, code: int) -> None:
        super().__init__(f"session {sid}: " + ("lease lost" if code == LOST else "session gone"))
        self.sid, self.code = sid, code


class Fenced:
    """The fenced writes of one worker."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._commit = redis.register_script(COMMIT_LUA)
        self._checkpoint = redis.register_script(CHECKPOINT_LUA)

    def commit(self, sid: str, lease_value: bytes, *, counter: str = "",
               ack: Sequence[str] = (), progress: Mapping[str, Any] | None = None,
               result: streams.Result | None = None, frame_id: str = "",
               client: Pipeline | None = None) -> int | None:
        """Acknowledge `ack`, add the number acknowledged to `counter`, record progress and
        publish, in one step; the lag in frames (None when queued on a pipeline: check the
        reply with `check`)."""
        prog = [x for kv in (progress or {}).items() for x in kv]
        fields = [x for kv in streams.encode_result(result).items() for x in kv] if result else []
        keys = [streams.lease_key(sid), streams.session_key(sid), streams.counters_key(sid),
                streams.progress_key(sid), streams.frames_key(sid), streams.results_key(sid)]
        args = [lease_value, streams.WORKER_GROUP, streams.RESULTS_MAXLEN, counter, frame_id,
                len(ack), *ack, len(prog), *prog, *fields]
        reply = self._commit(keys=keys, args=args, client=client)
        return None if client is not None else check(sid, reply)

    def commit_checkpoint(self, sid: str, lease_value: bytes, name: str, stream_id: str) -> None:
        """Make `name` the session's checkpoint; trim the frames it no longer needs."""
        keys = [streams.lease_key(sid), streams.session_key(sid), streams.progress_key(sid),
                streams.frames_key(sid)]
        check(sid, self._checkpoint(keys=keys, args=[lease_value, streams.WORKER_GROUP, name,
                                                     stream_id]))


def check(sid: str, reply: Any) -> int:
    """A script's reply, or LeaseLost when it refused to write."""
    if isinstance(reply, Exception):
        raise reply
    code = int(reply)
    if code in (LOST, GONE):
        raise LeaseLost(sid, code)
    return code
