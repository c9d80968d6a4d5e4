"""The compute thread: the main method, round-robin over the owned sessions.

Per session and turn it does one unit of `Session.take()` work: replay silent frames (state
only), count and acknowledge coalesced frames, reconstruct one frame and publish its volume
(counted and acknowledged in the same fenced step), or finish on `close`. It checkpoints a
session every `EITMON_CHECKPOINT_EVERY` frames and ends sessions (close, idle eviction,
shutdown): final checkpoint, release of the lease.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from redis.exceptions import RedisError

from service import streams
from worker.runtime import checkpoint
from worker.runtime.fenced import METHOD, LeaseLost
from worker.runtime.session import Close, Frame, Session, Work

if TYPE_CHECKING:
    from worker.runtime.loop import Worker

log = logging.getLogger("eitmon.worker")
T = TypeVar("T")


def lower_priority(nice: int) -> None:
    """Make this thread (and the torch threads it starts) yield the CPU to the intake thread,
    so previews stay on time while the main method uses what is left (Linux: per thread)."""
    if nice:
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)


class Compute:
    """Runs until the worker stops, then checkpoints and releases every session."""

    def __init__(self, w: Worker) -> None:
        self.w = w

    def run(self) -> None:
        lower_priority(self.w.cfg.compute_nice)
        if self.w.device == "cpu":  # D2IP's kernel threads inherit this thread's priority
            from worker.recon.d2ip.cpu import library as fused

            fused.start_threads()
        while not self.w.stopping.is_set():
            busy = False
            for s in self.w.sessions():
                if self.w.stopping.is_set():
                    break
                work = s.take()
                if work is not None:
                    busy = True
                    self.guarded(s, lambda s=s, work=work: self.process(s, work))
                elif s.ending == "evicted" and s.idle:
                    self.guarded(s, lambda s=s: self.end(s, "evicted"))
            if not busy:
                self.w.wait_for_work(0.2)
        for s in self.w.sessions():
            self.guarded(s, lambda s=s: self.end(s, "shutdown"))

    def guarded(self, s: Session, step: Callable[[], None]) -> None:
        """Run a step; a lost lease (or Redis gone for longer than a lease) drops the session."""
        try:
            step()
        except LeaseLost as e:
            self.w.lose(s, e)

    def process(self, s: Session, work: Work) -> None:
        for frame in work.replay:
            s.main.push(frame.dv)
            s.advance(frame)
        if work.coalesce:
            last = work.coalesce[-1]
            self.retry(s, lambda: self.w.fenced.commit(
                s.sid, s.lease.value, counter=streams.Counter.COALESCED.value,
                ack=[f.entry_id for f in work.coalesce], progress=self.progress(s, last)))
            for frame in work.coalesce:
                s.advance(frame)
        if isinstance(work.item, Frame):
            frame = work.item
            res = s.main.push(frame.dv)
            self.retry(s, lambda: self.w.fenced.commit(
                s.sid, s.lease.value, counter=streams.Counter.RECONSTRUCTED.value,
                ack=[frame.entry_id], progress=self.progress(s, frame),
                result=s.result(frame, res, "volume"), frame_id=frame.entry_id))
            s.advance(frame)
        elif isinstance(work.item, Close):
            self.end(s, "closed", work.item)
            return
        if s.since_checkpoint >= self.w.cfg.checkpoint_every:
            self.checkpoint(s, logging.DEBUG)

    def progress(self, s: Session, frame: Frame) -> dict[str, str]:
        return {streams.ProgressField.LAST_ID.value: frame.entry_id,
                streams.ProgressField.LAST_SEQ.value: str(frame.seq),
                streams.ProgressField.UPDATED_AT.value: repr(time.time()),
                streams.ProgressField.WORKER.value: self.w.name,
                streams.ProgressField.EPOCH.value: str(s.lease.epoch), METHOD: s.main_method}

    def checkpoint(self, s: Session, level: int = logging.INFO) -> None:
        """Write, commit (fenced) and prune; the session's frames before it are trimmed."""
        counters = self.retry(s, lambda: self.w.redis.hgetall(streams.counters_key(s.sid)))
        ckpt = checkpoint.Checkpoint(
            sid=s.sid, epoch=s.lease.epoch, stream_id=s.position, main_method=s.main_method,
            main_state=s.main.state_dict(), reference=s.position_reference,
            counters={k.decode(): int(v) for k, v in counters.items()})
        directory = self.w.cfg.checkpoints
        name = checkpoint.write(directory, ckpt)
        self.retry(s, lambda: self.w.fenced.commit_checkpoint(s.sid, s.lease.value, name,
                                                              s.position))
        checkpoint.prune(directory, name)
        s.since_checkpoint = 0
        log.log(level, "session %s: checkpointed at %s (epoch %d)", s.sid, s.position,
                s.lease.epoch)

    def end(self, s: Session, reason: str, close: Close | None = None) -> None:
        """Stop owning the session: final checkpoint, acknowledge `close`, release."""
        s.ending = reason
        if close is not None:
            s.position = close.entry_id
        if close is not None or s.since_checkpoint:
            self.checkpoint(s)
        if close is not None:
            self.retry(s, lambda: self.w.fenced.commit(s.sid, s.lease.value,
                                                       ack=[close.entry_id]))
        self.retry(s, lambda: self.w.leases.release(s.lease))
        self.w.forget(s)
        log.info("session %s: %s (epoch %d released)", s.sid, reason, s.lease.epoch)

    def retry(self, s: Session, op: Callable[[], T]) -> T:
        """Retry a Redis operation while the lease could still be ours; then LeaseLost."""
        deadline = time.monotonic() + self.w.cfg.lease_ms / 1000
        delay = 0.05
        while True:
            try:
                return op()
            except RedisError as e:
                if time.monotonic() + delay > deadline:
                    raise LeaseLost(s.sid, -1) from e
                log.warning("session %s: %s; retrying", s.sid, type(e).__name__)
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
