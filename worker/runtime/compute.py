"""The compute thread: the main method, round-robin over the owned sessions.

Per session and turn it does one unit of `Session.take()` work: replay silent frames (state
only), count and acknowledge coalesced frames, reconstruct one frame and publish its volume
(counted and acknowledged in the same fenced step), run the breath scheduling on the queued
frames (`breath` policy: `breathe`), or finish on `close`. A frame whose normalised data or
volume is not finite (a near-zero reference) is never pushed nor published: it is counted as
`dropped:non_finite`. It checkpoints a
session every `EITMON_CHECKPOINT_EVERY` frames and ends sessions (close, idle eviction,
shutdown): final checkpoint, release of the lease. A step that raises is the session's failure
(`failures.py`); the thread goes on with the others. When no session has work, it runs one
`background_step()` of one session's main method in turn (`d2ip-live`'s fine-tuning), paced so
that a step starts only when it should end before any session's next frame is due
(`pacing.py`); it waits for work when no method has any, or none may start. It ticks the
`ComputeClock` after every step and idle wait, which keeps the heartbeat going (`health.py`).
After each step it feeds the frames it took to the session's live data-quality report
(`quality.py`), which may exclude electrodes from the session's reconstruction.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, TypeVar

import numpy as np
from redis import Redis
from redis.exceptions import RedisError

from service.contract.codecs import ParametersEntry, Result, stream_id_ms
from service.contract.fields import DROPPED_PREFIX, Counter, DropReason, ProgressField
from service.contract.keys import counters_key
from worker.runtime import checkpoint
from worker.runtime.config import WorkerConfig
from worker.runtime.failures import SessionFailures
from worker.runtime.fenced import METHOD, Fenced, LeaseLost
from worker.runtime.health import ComputeClock
from worker.runtime.lease import Leases
from worker.runtime.pacing import StepPacer
from worker.runtime.quality import QualityMonitor
from worker.runtime.registry import SessionRegistry
from worker.runtime.session import Close, Frame, Session, Work

if TYPE_CHECKING:
    from worker.runtime.breath import Sample

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

    def __init__(self, cfg: WorkerConfig, device: str, redis: Redis, fenced: Fenced,
                 leases: Leases, registry: SessionRegistry, failures: SessionFailures,
                 clock: ComputeClock, stopping: threading.Event,
                 quality: QualityMonitor | None = None) -> None:
        self.cfg, self.device, self.quality = cfg, device, quality
        self.redis, self.fenced, self.leases = redis, fenced, leases
        self.registry, self.failures, self.clock = registry, failures, clock
        self.stopping = stopping
        self.turn = 0  # the session whose background step comes next
        self.pacer = StepPacer()

    def run(self) -> None:
        lower_priority(self.cfg.compute_nice)
        if self.device == "cpu" and self.cfg.fused:  # D2IP's kernel threads inherit its priority
            from worker.recon.d2ip.cpu import library as fused

            fused.start_threads()
        while not self.stopping.is_set():
            busy = False
            for session in self.registry.sessions():
                if self.stopping.is_set():
                    break
                work = session.take()
                if work is not None:
                    busy = True
                    self.guarded(session, partial(self.process, session, work))
                elif session.ending == "evicted" and session.idle:
                    self.guarded(session, partial(self.end, session, "evicted"))
                self.clock.tick()
            if not busy and not self.background():
                self.registry.wait_for_work(0.2)
                self.clock.tick()
        for session in self.registry.sessions():
            self.guarded(session, partial(self.end, session, "shutdown"))

    def background(self) -> bool:
        """One background step of the first session in turn that has one; False if none, or
        if a step would not end before a session's next frame is due (`pacing.py`)."""
        sessions = self.registry.sessions()
        now = time.monotonic()
        if not self.pacer.may_start(now, (s.forecast.next_due(now) for s in sessions)):
            return False
        for k in range(len(sessions)):
            session = sessions[(self.turn + k) % len(sessions)]
            done = False

            def step(session: Session = session) -> None:
                nonlocal done
                t0 = time.perf_counter()
                done = session.main.background_step()
                if done:
                    self.pacer.took(time.perf_counter() - t0)

            self.guarded(session, step)
            if done:
                self.turn = (self.turn + k + 1) % len(sessions)
                self.clock.tick()
                return True
        return False

    def guarded(self, session: Session, step: Callable[[], None]) -> None:
        """Run a step. A lost lease (or Redis gone for longer than a lease) drops the session;
        any other exception is the session's failure (`failures.py`), never the worker's."""
        try:
            step()
        except LeaseLost as e:
            self.registry.lose(session.lease, e)
        except Exception as e:
            self.failures.record(session.lease, e, "compute")

    def process(self, session: Session, work: Work) -> None:
        if session.breath is not None:
            for frames in (work.replay, work.breath):
                if frames:
                    self.breathe(session, frames)
        else:
            for frame in work.replay:
                if np.isfinite(frame.dv).all():  # as when it was counted: dropped, not pushed
                    session.main.push(frame.dv)
                session.advance(frame)
        if work.coalesce:
            last = work.coalesce[-1]
            self.retry(session, lambda: self.fenced.commit(
                session.sid, session.lease.value, counter=Counter.COALESCED.value,
                ack=[frame.entry_id for frame in work.coalesce],
                progress=self.progress(session, last)))
            for frame in work.coalesce:
                session.advance(frame)
        if isinstance(work.item, Frame):
            frame = work.item
            session.forecast.seen(stream_id_ms(frame.entry_id) / 1e3, time.monotonic())
            res = session.main.push(frame.dv) if np.isfinite(frame.dv).all() else None
            if res is None or not np.isfinite(res.volume).all():  # never published: counted
                self.retry(session, lambda: self.fenced.commit(
                    session.sid, session.lease.value,
                    counter=DROPPED_PREFIX + DropReason.NON_FINITE.value,
                    ack=[frame.entry_id], progress=self.progress(session, frame)))
            else:
                self.retry(session, lambda: self.fenced.commit(
                    session.sid, session.lease.value, counter=Counter.RECONSTRUCTED.value,
                    ack=[frame.entry_id], progress=self.progress(session, frame),
                    result=session.result(frame, res, "volume"), frame_id=frame.entry_id))
            session.advance(frame)
        elif isinstance(work.item, Close):
            self.end(session, "closed", work.item)
            return
        if self.quality is not None:
            taken = [*work.coalesce, *work.breath]
            if isinstance(work.item, Frame):
                taken.append(work.item)
            self.quality.step(session, taken, self.retry)
        if session.since_checkpoint >= self.cfg.checkpoint_every:
            self.checkpoint(session, logging.DEBUG)

    def breathe(self, session: Session, frames: list[Frame]) -> None:
        """Feed a batch of frames to the breath scheduling, then act on what it confirmed, in
        order: at each breath's end publish its parameters; at the batch's last
        end-inspiration run the main method on the tidal difference and publish it (`tidal`,
        acknowledging and counting the frames so far as `coalesced` in the same step). An
        earlier end-inspiration of the same batch (the main method was busy while it came) is
        skipped, so the lag never grows. Silent (replayed) frames only advance the
        scheduling: no main method, nothing published or counted."""
        from worker.runtime.breath import BreathEnd, newest_tidal  # with the first breath session
        from worker.ventilation.signal import global_impedance

        batch = frames
        frames = [frame for frame in batch if np.isfinite(frame.dv).all()]
        if not frames:
            self.drop_non_finite(session, batch, frames)
            return
        policy = session.breath
        assert policy is not None
        publish = not frames[0].silent
        values = global_impedance(self.previews(session, frames), session.model.mask)
        events = [(k, event) for k, (frame, value) in enumerate(zip(frames, values, strict=True))
                  for event in policy.tracker.push(frame.entry_id, frame.seq, frame.timestamp,
                                                   frame.dv, float(value))]
        chosen = newest_tidal([event for _, event in events])
        done = 0  # frames counted so far
        for k, event in events:
            if isinstance(event, BreathEnd):
                doc = policy.parameters.breath(
                    event, self.previews(session, event.samples), session.main_method,
                    session.preview_method)
                if publish:
                    entry = ParametersEntry(seq=event.samples[-1].seq, breath=doc,
                                            worker=session.lease.worker,
                                            epoch=session.lease.epoch)
                    self.retry(session, partial(self.fenced.publish_parameters,
                                                session.sid, session.lease.value, entry))
            elif publish and event is chosen:
                res = session.main.push(event.dv)
                policy.parameters.record_tidal(event, res.volume)
                peak = event.inspiration  # possibly counted with an earlier batch
                result = session.result(peak, res, "tidal",
                                        breath_start_seq=event.expiration.seq,
                                        breath_start_ts=event.expiration.timestamp)
                self.count_breath_frames(session, frames[done:k + 1], result, peak.entry_id)
                done = k + 1
        if not publish:
            for frame in frames:
                session.advance(frame)
        elif done < len(frames):
            self.count_breath_frames(session, frames[done:])
        if len(frames) < len(batch):  # last, so that progress never goes backwards
            self.drop_non_finite(session, batch, frames)

    def drop_non_finite(self, session: Session, batch: list[Frame], finite: list[Frame]
                        ) -> None:
        """Count the batch's non-finite frames as `dropped:non_finite` (never fed to the breath
        scheduling); progress and position move to the batch's last frame only when it is one
        of them, so neither goes backwards."""
        kept = {frame.entry_id for frame in finite}
        dropped = [frame for frame in batch if frame.entry_id not in kept]
        if not batch[0].silent:
            self.retry(session, lambda: self.fenced.commit(
                session.sid, session.lease.value,
                counter=DROPPED_PREFIX + DropReason.NON_FINITE.value,
                ack=[frame.entry_id for frame in dropped],
                progress=self.progress(session, batch[-1])))
        if batch[-1].entry_id not in kept:
            session.advance(batch[-1])

    def count_breath_frames(self, session: Session, frames: list[Frame],
                            result: Result | None = None, frame_id: str = "") -> None:
        last = frames[-1]
        self.retry(session, lambda: self.fenced.commit(
            session.sid, session.lease.value, counter=Counter.COALESCED.value,
            ack=[frame.entry_id for frame in frames], progress=self.progress(session, last),
            result=result, frame_id=frame_id))
        for frame in frames:
            session.advance(frame)

    @staticmethod
    def previews(session: Session, frames: list[Frame] | list[Sample]) -> np.ndarray:
        """(T, P, R, C) preview volumes of the frames (one batched product)."""
        results = session.preview.push_many(np.stack([frame.dv for frame in frames]))
        return np.stack([r.volume for r in results])

    def progress(self, session: Session, frame: Frame) -> dict[str, str]:
        return {ProgressField.LAST_ID.value: frame.entry_id,
                ProgressField.LAST_SEQ.value: str(frame.seq),
                ProgressField.UPDATED_AT.value: repr(time.time()),
                ProgressField.WORKER.value: self.cfg.worker_name,
                ProgressField.EPOCH.value: str(session.lease.epoch),
                METHOD: session.main_method}

    def checkpoint(self, session: Session, level: int = logging.INFO) -> None:
        """Write, commit (fenced) and prune; the session's frames before it are trimmed."""
        counters = self.retry(session,
                              lambda: self.redis.hgetall(counters_key(session.sid)))
        ckpt = checkpoint.Checkpoint(
            sid=session.sid, epoch=session.lease.epoch, stream_id=session.position,
            main_method=session.main_method, main_state=session.main.state_dict(),
            reference=session.position_reference,
            counters={k.decode(): int(v) for k, v in counters.items()},
            breath=session.breath.state_dict() if session.breath is not None else None)
        directory = self.cfg.checkpoints
        name = checkpoint.write(directory, ckpt)
        self.retry(session, lambda: self.fenced.commit_checkpoint(
            session.sid, session.lease.value, name, session.position))
        checkpoint.prune(directory, name)
        session.since_checkpoint = 0
        log.log(level, "session %s: checkpointed at %s (epoch %d)", session.sid,
                session.position, session.lease.epoch)

    def end(self, session: Session, reason: str, close: Close | None = None) -> None:
        """Stop owning the session: final checkpoint, acknowledge `close`, release."""
        session.ending = reason
        if close is not None:
            session.position = close.entry_id
        if close is not None or session.since_checkpoint:
            self.checkpoint(session)
        if close is not None:
            self.retry(session, lambda: self.fenced.commit(session.sid, session.lease.value,
                                                           ack=[close.entry_id]))
        self.retry(session, lambda: self.leases.release(session.lease))
        self.registry.drop(session.lease, reason)
        log.info("session %s: %s (epoch %d released)", session.sid, reason,
                 session.lease.epoch)

    def retry(self, session: Session, op: Callable[[], T]) -> T:
        """Retry a Redis operation while the lease could still be ours; then LeaseLost."""
        deadline = time.monotonic() + self.cfg.lease_ms / 1000
        delay = 0.05
        while True:
            try:
                return op()
            except RedisError as e:
                if time.monotonic() + delay > deadline:
                    raise LeaseLost(session.sid, -1) from e
                log.warning("session %s: %s; retrying", session.sid, type(e).__name__)
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
