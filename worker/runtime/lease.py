"""Session leases with fencing epochs.

A lease is the string `eitmon:lease:{sid}` = `"<epoch>:<worker>"` (`streams.encode_lease`), set
with `SET NX PX` by a Lua script that also INCRs the fencing counter `eitmon:epoch:{sid}`, so
every acquisition gets a new, larger epoch. The owner renews it with a compare-and-extend
script and releases it with compare-and-delete; a worker whose lease expired or was taken can
neither renew nor release it, and every other write it tries is refused by `fenced.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis import Redis

from service import streams

# KEYS: lease, epoch counter, session hash. ARGV: worker, ttl_ms.
# Returns the new epoch, 0 when another lease is held, -1 when the session is gone.
ACQUIRE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if redis.call('EXISTS', KEYS[3]) == 0 then return -1 end
local epoch = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], epoch .. ':' .. ARGV[1], 'PX', ARGV[2])
local exp = redis.call('HGET', KEYS[3], 'expires_at')
if exp then redis.call('EXPIREAT', KEYS[2], math.ceil(tonumber(exp))) end
return epoch
"""

# KEYS: lease. ARGV: lease value, ttl_ms. Returns 1 when extended, 0 when not ours.
RENEW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

# KEYS: lease. ARGV: lease value. Returns 1 when deleted, 0 when not ours.
RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class Lease:
    """A lease this worker holds: the session, its epoch and the exact value in Redis."""

    sid: str
    worker: str
    epoch: int

    @property
    def value(self) -> bytes:
        return streams.encode_lease(self.worker, self.epoch)


class Leases:
    """Acquire, renew and release leases of one worker."""

    def __init__(self, redis: Redis, worker: str, ttl_ms: int) -> None:
        self.redis, self.worker, self.ttl_ms = redis, worker, ttl_ms
        self._acquire = redis.register_script(ACQUIRE_LUA)
        self._renew = redis.register_script(RENEW_LUA)
        self._release = redis.register_script(RELEASE_LUA)

    def acquire(self, sid: str) -> Lease | None:
        """A new lease (with a new epoch), or None when it is held or the session is gone."""
        epoch = self._acquire(keys=[streams.lease_key(sid), streams.epoch_key(sid),
                                    streams.session_key(sid)], args=[self.worker, self.ttl_ms])
        return Lease(sid, self.worker, int(epoch)) if int(epoch) > 0 else None

    def renew(self, leases: list[Lease]) -> list[bool]:
        """Extend every lease in one round trip; False where it is no longer ours."""
        if not leases:
            return []
        with self.redis.pipeline(transaction=False) as p:
            for lease in leases:
                self._renew(keys=[streams.lease_key(lease.sid)],
                            args=[lease.value, self.ttl_ms], client=p)
            return [bool(r) for r in p.execute()]

    def release(self, lease: Lease) -> bool:
        """Give the lease up (another worker may take the session at once)."""
        return bool(self._release(keys=[streams.lease_key(lease.sid)], args=[lease.value]))
