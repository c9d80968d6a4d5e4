"""Session leases with fencing epochs.

A lease is the string `eitmon:lease:{sid}` = `"<epoch>:<worker>"` (`encode_lease`), set
with `SET NX PX` by a Lua script (`service.contract.scripts`) that also INCRs the fencing
counter `eitmon:epoch:{sid}`, so every acquisition gets a new, larger epoch. The owner renews
it with a compare-and-extend script and releases it with compare-and-delete; a worker whose
lease expired or was taken can neither renew nor release it, and every other write it tries
is refused by `fenced.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis import Redis

from service.contract.codecs import encode_lease
from service.contract.keys import epoch_key, lease_key, session_key
from service.contract.scripts import registered


@dataclass(frozen=True)
class Lease:
    """A lease this worker holds: the session, its epoch and the exact value in Redis."""

    sid: str
    worker: str
    epoch: int

    @property
    def value(self) -> bytes:
        return encode_lease(self.worker, self.epoch)


class Leases:
    """Acquire, renew and release leases of one worker."""

    def __init__(self, redis: Redis, worker: str, ttl_ms: int) -> None:
        self.redis, self.worker, self.ttl_ms = redis, worker, ttl_ms
        scripts = registered(redis)
        self._acquire, self._renew, self._release = (scripts.acquire, scripts.renew,
                                                     scripts.release)

    def acquire(self, sid: str) -> Lease | None:
        """A new lease (with a new epoch), or None when it is held or the session is gone."""
        epoch = self._acquire(keys=[lease_key(sid), epoch_key(sid),
                                    session_key(sid)], args=[self.worker, self.ttl_ms])
        return Lease(sid, self.worker, int(epoch)) if int(epoch) > 0 else None

    def renew(self, leases: list[Lease]) -> list[bool]:
        """Extend every lease in one round trip; False where it is no longer ours."""
        if not leases:
            return []
        with self.redis.pipeline(transaction=False) as p:
            for lease in leases:
                self._renew(keys=[lease_key(lease.sid)],
                            args=[lease.value, self.ttl_ms], client=p)
            return [bool(r) for r in p.execute()]

    def release(self, lease: Lease) -> bool:
        """Give the lease up (another worker may take the session at once)."""
        return bool(self._release(keys=[lease_key(lease.sid)], args=[lease.value]))
