"""The sessions one worker owns: the leases it holds (from the claim to the release) and the
sessions past setup, with the wake-up of the compute thread when one of them has work.

Every thread reads it; it changes when a lease is acquired (`hold`), a session goes live
(`go_live`) and when the worker stops owning one (`drop`: the session is ended, lost or
failed), which also frees the session's share of its forward model.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from worker.runtime.lease import Lease
from worker.runtime.methods import ModelCache
from worker.runtime.session import Session

log = logging.getLogger("eitmon.worker")


class SessionRegistry:
    """Leases held and live sessions, by session id (thread-safe)."""

    def __init__(self, capacity: int, models: ModelCache) -> None:
        self.capacity, self.models = capacity, models
        self._lock = threading.Lock()
        self._work = threading.Condition()
        self._held: dict[str, Lease] = {}  # every lease this worker holds
        self._live: dict[str, Session] = {}  # sessions past setup
        self._backoff: dict[str, float] = {}  # sid -> monotonic time until which not to retake

    # --- reads --------------------------------------------------------------------------------

    def sessions(self) -> list[Session]:
        with self._lock:
            return list(self._live.values())

    def leases(self) -> list[Lease]:
        with self._lock:
            return list(self._held.values())

    def holds(self, lease: Lease) -> bool:
        with self._lock:
            return self._held.get(lease.sid) == lease

    def busy_with(self, sid: str) -> bool:
        """True while this worker holds the session's lease or backs off from it."""
        with self._lock:
            return sid in self._held or self._backoff.get(sid, 0.0) > time.monotonic()

    def owns(self, session: Session) -> bool:
        with self._lock:
            return self._live.get(session.sid) is session

    def free_slots(self) -> int:
        with self._lock:
            return self.capacity - len(self._held)

    # --- changes ------------------------------------------------------------------------------

    def hold(self, lease: Lease) -> None:
        """A lease was just acquired."""
        with self._lock:
            self._held[lease.sid] = lease

    def go_live(self, session: Session) -> bool:
        """Make an opened session live; False (and its model released) when its lease was lost
        during setup."""
        with self._lock:
            owned = self._held.get(session.sid) == session.lease
            if owned:
                self._live[session.sid] = session
        if not owned:
            self.models.release(session.config)
        return owned

    def drop(self, lease: Lease, ending: str) -> Session | None:
        """Stop holding `lease` and forget its session, if live (idempotent); the session's
        model share is released. Returns the session that was live."""
        return self._remove(lease, ending)[1]

    def lose(self, lease: Lease, why: Any) -> None:
        """The lease is gone: stop owning the session at once (no checkpoint, no release)."""
        held, _ = self._remove(lease, "lost")
        if held:
            log.warning("session %s: %s (epoch %d); no longer owned", lease.sid, why,
                        lease.epoch)

    def _remove(self, lease: Lease, ending: str) -> tuple[bool, Session | None]:
        """(whether `lease` was held, the live session it had)."""
        with self._lock:
            held = self._held.get(lease.sid) == lease
            if held:
                del self._held[lease.sid]
            session = self._live.get(lease.sid)
            if session is None or session.lease != lease:
                return held, None
            del self._live[lease.sid]
        session.ending = ending
        self.models.release(session.config)
        return held, session

    def back_off(self, sid: str, seconds: float) -> None:
        """Do not take the session again for `seconds`."""
        now = time.monotonic()
        with self._lock:
            self._backoff = {other: until for other, until in self._backoff.items()
                             if until > now}
            self._backoff[sid] = now + seconds

    # --- work signal --------------------------------------------------------------------------

    def notify(self) -> None:
        """A session has work (or the worker stops)."""
        with self._work:
            self._work.notify_all()

    def wait_for_work(self, timeout: float) -> None:
        with self._work:
            self._work.wait(timeout)
