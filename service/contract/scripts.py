"""All the Lua scripts of the system, each registered once per Redis client.

The field names and status values inside the Lua come from `fields` (rendered at import from
`${Enum.MEMBER}` placeholders; a misspelt placeholder fails the import), and the entries the
scripts append to streams come from the encoders in `codecs` (passed as ARGV), so the Python
enums are the only spelling of every name. tests/service/contract/test_scripts.py checks that
every field name in the rendered Lua is one of the contract's enum values.

Each script lists what its KEYS are (`LuaScript.keys`); the comment above it gives its ARGV
and replies. Register them with `registered(redis)` (sync or asyncio client).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, fields
from string import Template
from typing import Any

from service.contract.codecs import LEASE_SEPARATOR
from service.contract.fields import DROPPED_PREFIX, ENUMS, REJECTED_PREFIX

# Session replies of the API's scripts.
MISSING, NOT_OPEN, FAILED = -1, -2, -3
# Replies of the ingest script: a seq jumped more than the window ahead of the last accepted;
# the session's backlog bound would be passed.
SEQ_TOO_FAR, BACKLOG_FULL = -4, -5
# Replies of the worker's fenced scripts: the lease was lost, or the session is gone.
LOST, GONE = -1, -2


class _Lua(Template):
    braceidpattern = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Z_]+)?"


_NAMES = {f"{enum.__name__}.{member.name}": member.value for enum in ENUMS for member in enum}
_NAMES |= {"REJECTED_PREFIX": REJECTED_PREFIX, "LEASE_SEPARATOR": LEASE_SEPARATOR,
           "DROPPED_PREFIX": DROPPED_PREFIX}


@dataclass(frozen=True)
class LuaScript:
    """A script's rendered source and what each of its KEYS is ("session", "counters", ...)."""

    name: str
    keys: tuple[str, ...]
    source: str


def _script(name: str, keys: tuple[str, ...], template: str) -> LuaScript:
    return LuaScript(name, keys, _Lua(template).substitute(_NAMES))


# --- the API's scripts -------------------------------------------------------------------------

# ARGV: n, w, window, the backlog bound, then per frame its seq and the w field/value items of
# `encode_frame`. Appends the frames whose seq is above the session's last, counts them and the
# duplicates. A seq more than `window` ahead of the one accepted before it refuses the whole
# batch; so does a batch that would take the backlog (accepted - reconstructed - coalesced) past
# the bound. Returns {accepted, last_seq, lag_frames, {duplicate seqs}}, or {MISSING},
# {NOT_OPEN}, {FAILED}, {SEQ_TOO_FAR}, {BACKLOG_FULL, lag_frames}.
INGEST = _script("ingest", ("session", "counters", "frames"), """
local st = redis.call('HGET', KEYS[1], '${SessionField.STATUS}')
if not st then return {-1} end
if st == '${SessionStatus.FAILED}' then return {-3} end
if st ~= '${SessionStatus.OPEN}' then return {-2} end
local last_str = redis.call('HGET', KEYS[1], '${SessionField.LAST_SEQ}') or '-1'
local last = tonumber(last_str)
local n, width = tonumber(ARGV[1]), tonumber(ARGV[2])
local window, most = tonumber(ARGV[3]), tonumber(ARGV[4])
local new, top = 0, last
for j = 5, 4 + n * (1 + width), 1 + width do
  local s = tonumber(ARGV[j])
  if s > top + window then return {-4} end
  if s > top then new, top = new + 1, s end
end
local c = redis.call('HMGET', KEYS[2], '${Counter.ACCEPTED}', '${Counter.RECONSTRUCTED}',
                     '${Counter.COALESCED}', '${Counter.DROPPED}')
local lag = (tonumber(c[1]) or 0) - (tonumber(c[2]) or 0) - (tonumber(c[3]) or 0)
            - (tonumber(c[4]) or 0)
if new > 0 and lag + new > most then return {-5, lag} end
local accepted = 0
local dups = {}
local i = 5
for _ = 1, n do
  local seq = ARGV[i]
  local s = tonumber(seq)
  if s > last then
    redis.call('XADD', KEYS[3], '*', unpack(ARGV, i + 1, i + width))
    last = s
    last_str = seq
    accepted = accepted + 1
  else
    dups[#dups + 1] = seq
  end
  i = i + 1 + width
end
if accepted > 0 then
  redis.call('HSET', KEYS[1], '${SessionField.LAST_SEQ}', last_str)
  redis.call('HINCRBY', KEYS[2], '${Counter.ACCEPTED}', accepted)
end
if #dups > 0 then redis.call('HINCRBY', KEYS[2], '${Counter.DUPLICATE}', #dups) end
return {accepted, last_str, lag + accepted, dups}
""")

# ARGV: reason. Counts a rejected request, only for an existing session. Returns 0 or 1.
COUNT_REJECTION = _script("count_rejection", ("session", "counters"), """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[2], '${Counter.REJECTED}', 1)
redis.call('HINCRBY', KEYS[2], '${REJECTED_PREFIX}' .. ARGV[1], 1)
return 1
""")

# KEYS: `keys.session_keys(sid)`. ARGV: now, expires_at, retention_s, close reason, then the
# fields of `encode_close`. Returns 0 (missing), 1 (already closed), 2 (closed now). A failed
# session keeps its status; closing it records closed_at and puts its keys under the retention
# expiry.
CLOSE = _script("close", ("session", "counters", "frames", "results", "progress", "epoch",
                         "parameters"), """
local st = redis.call('HGET', KEYS[1], '${SessionField.STATUS}')
if not st then return 0 end
if redis.call('HEXISTS', KEYS[1], '${SessionField.CLOSED_AT}') == 1 then return 1 end
if st ~= '${SessionStatus.FAILED}' then
  redis.call('HSET', KEYS[1], '${SessionField.STATUS}', '${SessionStatus.CLOSED}')
end
redis.call('HSET', KEYS[1], '${SessionField.CLOSED_AT}', ARGV[1],
           '${SessionField.EXPIRES_AT}', ARGV[2], '${SessionField.CLOSE_REASON}', ARGV[4])
redis.call('XADD', KEYS[3], '*', unpack(ARGV, 5))
for i = 1, #KEYS do redis.call('EXPIRE', KEYS[i], ARGV[3]) end
return 2
""")

# ARGV: M float32 bytes, then the fields of `encode_reference`. Stores the reference and
# queues it in-band. Returns the new reference version, MISSING, NOT_OPEN or FAILED.
REFERENCE = _script("reference", ("session", "frames"), """
local st = redis.call('HGET', KEYS[1], '${SessionField.STATUS}')
if not st then return -1 end
if st == '${SessionStatus.FAILED}' then return -3 end
if st ~= '${SessionStatus.OPEN}' then return -2 end
local v = redis.call('HINCRBY', KEYS[1], '${SessionField.REFERENCE_VERSION}', 1)
redis.call('HSET', KEYS[1], '${SessionField.REFERENCE}', ARGV[1])
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
return v
""")

# --- the worker's fenced writes ----------------------------------------------------------------
# Every one first compares the lease with the exact value this worker was given (ARGV[1]) and
# checks that the session exists: LOST or GONE otherwise, before anything is written. Keys a
# worker creates for a closed session get `EXPIREAT expires_at` (the retention rule).

_FENCE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if redis.call('EXISTS', KEYS[2]) == 0 then return -2 end
local function expire_with_session(...)
  local exp = redis.call('HGET', KEYS[2], '${SessionField.EXPIRES_AT}')
  if exp then
    for _, k in ipairs({...}) do redis.call('EXPIREAT', k, math.ceil(tonumber(exp))) end
  end
end
"""

# ARGV: lease value, group, results maxlen, counter field ('' = none), frame id ('' = none),
#       n_ack, ack ids..., n_progress, progress field/value..., the fields of `encode_result`
#       (none = no result). The counter grows by the number of entries XACK acknowledged (a
#       `dropped:<reason>` counter also grows `dropped`, the total), and
#       with acks requested the result is published only if one was, so a retried commit never
#       counts or publishes twice. `lag_frames` and `latency_ms` (frame accepted -> published)
#       are filled in from the counters and the Redis clock. Returns the lag in frames, LOST or
#       GONE.
COMMIT = _script("commit",
                 ("lease", "session", "counters", "progress", "frames", "results"), _FENCE + """
local i = 6
local n_ack = tonumber(ARGV[i])
local acked = 0
for j = i + 1, i + n_ack, 1000 do
  acked = acked + redis.call('XACK', KEYS[5], ARGV[2],
                             unpack(ARGV, j, math.min(j + 999, i + n_ack)))
end
if n_ack > 0 and acked == 0 then return 0 end
i = i + n_ack + 1
if ARGV[4] ~= '' and acked > 0 then
  redis.call('HINCRBY', KEYS[3], ARGV[4], acked)
  if string.sub(ARGV[4], 1, #'${DROPPED_PREFIX}') == '${DROPPED_PREFIX}' then
    redis.call('HINCRBY', KEYS[3], '${Counter.DROPPED}', acked)
  end
end
local n_progress = tonumber(ARGV[i])
if n_progress > 0 then redis.call('HSET', KEYS[4], unpack(ARGV, i + 1, i + n_progress)) end
i = i + n_progress + 1
local c = redis.call('HMGET', KEYS[3], '${Counter.ACCEPTED}', '${Counter.RECONSTRUCTED}',
                     '${Counter.COALESCED}', '${Counter.DROPPED}')
local lag = math.max((tonumber(c[1]) or 0) - (tonumber(c[2]) or 0) - (tonumber(c[3]) or 0)
                     - (tonumber(c[4]) or 0), 0)
if i <= #ARGV then
  local t = redis.call('TIME')
  local now_ms = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
  local frame_ms = tonumber(string.match(ARGV[5], '^(%d+)-'))
  local fields = {}
  for j = i, #ARGV, 2 do
    local v = ARGV[j + 1]
    if ARGV[j] == '${ResultField.LAG_FRAMES}' then v = tostring(lag)
    elseif ARGV[j] == '${ResultField.LATENCY_MS}' and frame_ms then
      v = string.format('%.3f', math.max(now_ms - frame_ms, 0))
    end
    fields[#fields + 1] = ARGV[j]
    fields[#fields + 1] = v
  end
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[3], '*', unpack(fields))
end
expire_with_session(KEYS[4], KEYS[6])
return lag
""")

# ARGV: lease value, group, file name, stream id. Records the checkpoint and trims the frame
# stream below it (and below any pending entry). Returns 1, LOST or GONE.
CHECKPOINT = _script("checkpoint", ("lease", "session", "progress", "frames"), _FENCE + """
local function older(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as < bs)
end
redis.call('HSET', KEYS[3], '${ProgressField.CHECKPOINT}', ARGV[3],
           '${ProgressField.CHECKPOINT_ID}', ARGV[4])
local minid = ARGV[4]
local pending = redis.call('XPENDING', KEYS[4], ARGV[2])
if pending[2] and older(pending[2], minid) then minid = pending[2] end
if minid ~= '0-0' then redis.call('XTRIM', KEYS[4], 'MINID', '~', minid) end
expire_with_session(KEYS[3])
return 1
""")

# ARGV: lease value, parameters maxlen, the fields of `encode_parameters`. Appends one breath's
# parameters. Returns 1, LOST or GONE.
PARAMETERS = _script("parameters", ("lease", "session", "parameters"), _FENCE + """
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
expire_with_session(KEYS[3])
return 1
""")

# --- the worker's leases -----------------------------------------------------------------------

# ARGV: worker, ttl_ms. SET NX PX of "<epoch>:<worker>" (`encode_lease`) with a new epoch.
# Returns the new epoch, 0 when another lease is held, -1 when the session is gone.
ACQUIRE = _script("acquire", ("lease", "epoch", "session"), """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if redis.call('EXISTS', KEYS[3]) == 0 then return -1 end
local epoch = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], epoch .. '${LEASE_SEPARATOR}' .. ARGV[1], 'PX', ARGV[2])
local exp = redis.call('HGET', KEYS[3], '${SessionField.EXPIRES_AT}')
if exp then redis.call('EXPIREAT', KEYS[2], math.ceil(tonumber(exp))) end
return epoch
""")

# ARGV: lease value, ttl_ms. Returns 1 when extended, 0 when not ours.
RENEW = _script("renew", ("lease",), """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
""")

# ARGV: lease value. Returns 1 when deleted, 0 when not ours.
RELEASE = _script("release", ("lease",), """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
""")

# --- the worker's quarantine of a failing session ---------------------------------------------

# KEYS: lease, session, counters, control stream, then every key to expire (`session_keys`).
# ARGV: lease value, most failures, reason, expiry (unix s) unless closed, group.
# Counts one failure and releases the lease; the last allowed failure also marks the session
# failed, removes its control entry (so no worker claims it again) and puts its keys under the
# retention expiry, as closing does. Returns the failure count (this one included), LOST or GONE.
FAIL = _script("fail", ("lease", "session", "counters", "control"), """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if redis.call('EXISTS', KEYS[2]) == 0 then return -2 end
local failures = redis.call('HINCRBY', KEYS[3], '${Counter.FAILURES}', 1)
redis.call('DEL', KEYS[1])
if failures < tonumber(ARGV[2]) then return failures end
local control_id = redis.call('HGET', KEYS[2], '${SessionField.CONTROL_ID}')
if control_id then
  redis.call('XACK', KEYS[4], ARGV[5], control_id)
  redis.call('XDEL', KEYS[4], control_id)
end
local exp = redis.call('HGET', KEYS[2], '${SessionField.EXPIRES_AT}') or ARGV[4]
redis.call('HSET', KEYS[2], '${SessionField.STATUS}', '${SessionStatus.FAILED}',
           '${SessionField.FAILURE_REASON}', ARGV[3], '${SessionField.EXPIRES_AT}', exp)
for i = 5, #KEYS do redis.call('EXPIREAT', KEYS[i], math.ceil(tonumber(exp))) end
return failures
""")

SCRIPTS = (INGEST, COUNT_REJECTION, CLOSE, REFERENCE, COMMIT, CHECKPOINT, ACQUIRE, RENEW,
           RELEASE, FAIL, PARAMETERS)


@dataclass(frozen=True)
class Scripts:
    """Every script registered on one client: call them as `scripts.ingest(keys=, args=)`
    (redis-py `Script` objects, or `AsyncScript` on an asyncio client)."""

    ingest: Any
    count_rejection: Any
    close: Any
    reference: Any
    commit: Any
    checkpoint: Any
    acquire: Any
    renew: Any
    release: Any
    fail: Any
    parameters: Any


_REGISTERED: weakref.WeakKeyDictionary[Any, Scripts] = weakref.WeakKeyDictionary()


def registered(redis: Any) -> Scripts:
    """The scripts registered on `redis`, once per client."""
    scripts = _REGISTERED.get(redis)
    if scripts is None:
        by_name = {script.name: script for script in SCRIPTS}
        scripts = Scripts(**{f.name: redis.register_script(by_name[f.name].source)
                             for f in fields(Scripts)})
        _REGISTERED[redis] = scripts
    return scripts
