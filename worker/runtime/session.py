"""One owned session: its settings, forward model, reconstructors, reference and backlog.

The intake thread `accept`s frame-stream entries in stream order (normalising each frame
against the reference in effect at that point) and queues them; the compute thread `take`s
work under the session's real-time policy:
- `complete`: every frame, oldest first;
- `realtime`: when more than one frame is queued, the newest is reconstructed and the older
  ones are coalesced (counted, acknowledged, never reconstructed);
- `breath`: every queued frame goes to the breath scheduling (`worker.runtime.breath`), which
  runs the main method once per breath on its tidal difference; the frames are coalesced.
Frames replayed after a takeover that were already counted (`silent`) only advance the main
reconstructor's state; under `realtime` only the newest of them is pushed; under `breath` they
advance the breath scheduling without running the main method or publishing.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from service.contract.codecs import FrameEntry, Result
from service.contract.session import SessionConfig
from worker.recon.base import FrameResult, StreamingReconstructor, normalise
from worker.runtime.lease import Lease
from worker.runtime.methods import SharedPreview
from worker.runtime.pacing import FrameForecast
from worker.runtime.reference import Reference, check_model

if TYPE_CHECKING:
    from worker.devices.consistency import ProtocolCheck
    from worker.forward.model import ForwardModel
    from worker.runtime.breath import BreathPolicy, Sample
    from worker.runtime.quality_window import QualityWindow


@dataclass(frozen=True)
class Frame:
    """A frame ready for the main method."""

    entry_id: str
    seq: int
    timestamp: float
    dv: np.ndarray  # normalised voltage change
    reference: np.ndarray  # the reference it was normalised against
    silent: bool = False  # already counted before a takeover: replay for the state only
    voltages: np.ndarray | None = None  # the raw frame (for the live quality report)


@dataclass(frozen=True)
class Close:
    """The session's `close` entry: finish after everything before it."""

    entry_id: str


Queued = Frame | Close  # what waits in a session's backlog, in stream order


@dataclass
class Work:
    """What the compute thread does next for a session."""

    replay: list[Frame] = field(default_factory=list)
    coalesce: list[Frame] = field(default_factory=list)
    item: Frame | Close | None = None
    breath: list[Frame] = field(default_factory=list)  # for the breath scheduling


@dataclass
class Session:
    """Per-session state shared by the intake and compute threads (guarded by `lock`)."""

    lease: Lease
    config: SessionConfig
    model: ForwardModel
    preview: SharedPreview
    preview_method: str
    main: StreamingReconstructor
    main_method: str
    reference: Reference
    position: str  # last entry whose effect is in the main state (checkpoint position)
    lock: threading.Lock = field(default_factory=threading.Lock)
    backlog: deque[Queued] = field(default_factory=deque)
    waiting: list[tuple[str, FrameEntry, bool]] = field(default_factory=list)
    taken: set[str] = field(default_factory=set)  # entry ids taken in, perhaps still pending
    since_checkpoint: int = 0
    last_activity: float = field(default_factory=time.monotonic)
    ending: str | None = None  # why the session stops: closed, evicted, shutdown, lost, failed
    breath: BreathPolicy | None = None  # the breath scheduling, under the `breath` policy
    forecast: FrameForecast = field(default_factory=FrameForecast)  # its next frame (pacing)
    quality: QualityWindow | None = None  # the live data-quality report (`quality.py`)
    model_check: ProtocolCheck | None = None  # the reference against the model

    def __post_init__(self) -> None:
        self.position_reference = self.reference.value
        self.shared_preview = self.preview  # the model's; `preview` may become the session's
        self._checked: np.ndarray | None = None
        self.check_reference()

    def check_reference(self) -> None:
        """Check a new reference against the model (`reference.check_model`); raises
        ProtocolMismatch, before any frame is normalised against it, when refused."""
        value = self.reference.value
        if value is not None and value is not self._checked:
            self.model_check = check_model(value, self.model)
            self._checked = value

    @property
    def sid(self) -> str:
        return self.lease.sid

    @property
    def realtime(self) -> bool:
        return self.config.realtime == "realtime"

    def accept(self, entry_id: str, entry: FrameEntry, silent: bool = False) -> list[Queued]:
        """Take one entry in stream order; returns what it made ready for `queue`, oldest
        first.

        A `close` entry comes last, behind every frame before it (frames still waiting for a
        reference get the average of the frames seen so far), so a close read together with
        the last frames never overtakes them."""
        self.last_activity = time.monotonic()
        if entry.kind == "reference":
            self.reference.set(entry.voltages)
            return self._release()
        if entry.kind == "close":
            if self.waiting and not self.reference.ready:
                self.reference.set(np.mean([entry.voltages for _, entry, _ in self.waiting],
                                           axis=0))
            return [*self._release(), Close(entry_id)]
        self.reference.observe(entry.voltages)
        self.waiting.append((entry_id, entry, silent))
        return self._release()

    def _release(self) -> list[Queued]:
        self.check_reference()
        if not self.reference.ready or not self.waiting:
            return []
        ref = self.reference.value
        assert ref is not None
        with np.errstate(divide="ignore", invalid="ignore"):
            ready = [Frame(entry_id, entry.seq or 0, entry.timestamp or 0.0,
                           normalise(entry.voltages, ref), ref, silent, entry.voltages)
                     for entry_id, entry, silent in self.waiting]
        self.waiting = []
        return ready

    def queue(self, ready: list[Queued]) -> None:
        """Append what `accept` made ready, in the order it came."""
        with self.lock:
            self.backlog.extend(ready)

    def take(self) -> Work | None:
        """The next unit of work under the real-time policy, or None when idle."""
        with self.lock:
            if not self.backlog:
                return None
            head = self.backlog[0]
            if isinstance(head, Frame) and head.silent:
                replay = self._pop_while(lambda frame: frame.silent)
                return Work(replay=replay[-1:] if self.realtime else replay)
            if isinstance(head, Frame) and self.breath is not None:
                return Work(breath=self._pop_while(lambda frame: not frame.silent))
            if isinstance(head, Close) or not self.realtime:
                return Work(item=self.backlog.popleft())
            frames = self._pop_while(lambda frame: not frame.silent)
            return Work(coalesce=frames[:-1], item=frames[-1])

    def _pop_while(self, keep: Callable[[Frame], bool]) -> list[Frame]:
        out: list[Frame] = []
        while self.backlog and isinstance(self.backlog[0], Frame) and keep(self.backlog[0]):
            out.append(self.backlog.popleft())
        return out

    @property
    def idle(self) -> bool:
        with self.lock:
            return not self.backlog and not self.waiting

    def advance(self, frame: Frame) -> None:
        """Record that the main state now accounts for `frame` (pushed or coalesced)."""
        self.position = frame.entry_id
        self.position_reference = frame.reference
        self.since_checkpoint += 1

    def result(self, frame: Frame | Sample, res: FrameResult, kind: str, **breath: Any
               ) -> Result:
        """The result to publish for `frame` (latency and lag are filled in by `Fenced`);
        `breath` holds a `tidal` result's breath_start_seq and breath_start_ts."""
        loss = float(res.loss) if math.isfinite(res.loss) else None
        method = self.preview_method if kind == "preview" else self.main_method
        return Result.from_volume(res.volume, dtype="float16", seq=frame.seq,
                                  timestamp=frame.timestamp, kind=kind, method=method,
                                  iterations=res.iterations, loss=loss, latency_ms=0.0,
                                  lag_frames=0, worker=self.lease.worker, epoch=self.lease.epoch,
                                  **breath)
