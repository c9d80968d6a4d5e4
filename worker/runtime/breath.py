"""The `breath` policy: one main-method image per breath, and each breath's parameters.

Clinicians read ventilation per breath, so under `breath` the main method (D2IP) does not
reconstruct frames: it reconstructs each breath's **tidal difference** Δv_insp - Δv_exp (the
end-inspiration frame minus the preceding end-expiration frame, both normalised against the
session's reference), with its state carried from breath to breath (for D2IP `push` starts
from the last breath's weights: TPP). The preview stays at frame rate.

`BreathTracker` is the scheduling, shared by the worker's compute thread and `eitmon bench
breath`: it is fed every frame with its global impedance (the ventilation package's
`global_impedance` of the frame's preview volume: -Σ Δσ/σ0 over the body mask) and drives a
`worker.ventilation.BreathDetector`. It keeps the frames of the open breath and returns
- `Tidal` at each confirmed end-inspiration (at most `confirm_s` = 0.5 s plus the hysteresis
  after the peak): the main method's next input. Of several confirmed in one batch of frames
  (they came while the main method was busy) only the newest is reconstructed
  (`newest_tidal`), as the `realtime` policy does with frames;
- `BreathEnd` at each confirmed end-expiration that closes a breath: its frames, for the
  parameters (`LiveParameters`).

Its whole state (detector, kept frames, the pending end-expiration frame, the last tidal image)
goes into the session's checkpoint, so a takeover continues the breath in progress.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from worker.ventilation.breaths import Breath, BreathDetector
from worker.ventilation.export import json_safe
from worker.ventilation.lung_mask import lung_region
from worker.ventilation.parameters import AnalysisSettings, breath_parameters
from worker.ventilation.regional import regional
from worker.ventilation.signal import voxel_impedance
from worker.ventilation.space import VoxelSpace

if TYPE_CHECKING:
    from worker.forward.model import ForwardModel

DEFAULT_RATE = 20.0  # frames/s when the first frames' timestamps do not give a rate
RATE_FRAMES = 10  # frames whose timestamps set the detector's sampling rate
KEEP_S = 30.0  # the longest span of frames kept; a longer breath gets no parameters


@dataclass(frozen=True)
class Sample:
    """A frame as the breath policy keeps it; `index` counts the frames the detector saw."""

    index: int
    entry_id: str
    seq: int
    timestamp: float
    dv: np.ndarray


@dataclass(frozen=True)
class Tidal:
    """A breath's tidal difference, ready for the main method."""

    expiration: Sample  # end-expiration before the breath (the start of inspiration)
    inspiration: Sample  # end-inspiration

    @property
    def dv(self) -> np.ndarray:
        return self.inspiration.dv - self.expiration.dv


@dataclass(frozen=True)
class BreathEnd:
    """A whole breath (valley -> peak -> valley) and its frames, start to end."""

    breath: Breath  # detector indices and frame times
    samples: list[Sample]


Event = Tidal | BreathEnd


def newest_tidal(events: list[Event]) -> Tidal | None:
    """The one `Tidal` of a batch of events that the main method reconstructs: the newest
    (the earlier ones came while it was busy; reconstructing them would make the lag grow)."""
    return next((e for e in reversed(events) if isinstance(e, Tidal)), None)


def _sample_state(sample: Sample) -> dict[str, Any]:
    return {"index": sample.index, "entry_id": sample.entry_id, "seq": sample.seq,
            "timestamp": sample.timestamp, "dv": sample.dv}


def _sample(state: dict[str, Any]) -> Sample:
    return Sample(int(state["index"]), str(state["entry_id"]), int(state["seq"]),
                  float(state["timestamp"]), np.asarray(state["dv"]))


class BreathTracker:
    """Frames in, `Tidal` and `BreathEnd` events out (module doc)."""

    def __init__(self) -> None:
        self.detector: BreathDetector | None = None
        self.starting: list[tuple[Sample, float]] = []  # frames before the rate is known
        self.kept: deque[Sample] = deque()
        self.count = 0
        self.expiration: Sample | None = None  # the last end-expiration frame

    def push(self, entry_id: str, seq: int, timestamp: float, dv: np.ndarray,
             value: float) -> list[Event]:
        """Add one frame with its global impedance; the events it confirmed, in time order."""
        sample = Sample(self.count, entry_id, seq, timestamp, dv)
        self.count += 1
        if self.detector is None:
            self.starting.append((sample, value))
            if len(self.starting) < RATE_FRAMES:
                return []
            self.detector = BreathDetector(self._rate())
            starting, self.starting = self.starting, []
            return [event for s, v in starting for event in self._feed(s, v)]
        return self._feed(sample, value)

    def _rate(self) -> float:
        step = np.diff([sample.timestamp for sample, _ in self.starting])
        if step.size and np.all(step > 0) and np.isfinite(step).all():
            return float(1.0 / np.median(step))
        return DEFAULT_RATE

    def _feed(self, sample: Sample, value: float) -> list[Event]:
        assert self.detector is not None
        self.kept.append(sample)
        limit = int(KEEP_S * self.detector.rate)
        while len(self.kept) > limit:
            self.kept.popleft()
        update = self.detector.push(sample.timestamp, value)
        events: list[Event] = []
        for point in update.turning_points:
            frame = self._at(point.index)
            if point.kind == "end_inspiration":
                if self.expiration is not None and frame is not None:
                    events.append(Tidal(self.expiration, frame))
                continue
            events += [BreathEnd(b, [s for s in self.kept if b.start <= s.index <= b.end])
                       for b in update.breaths if b.end == point.index
                       and self.kept and self.kept[0].index <= b.start]
            self.expiration = frame
            while self.kept and self.kept[0].index < point.index:  # the open breath's frames
                self.kept.popleft()
        return events

    def _at(self, index: int) -> Sample | None:
        first = self.kept[0].index if self.kept else self.count
        return self.kept[index - first] if first <= index < first + len(self.kept) else None

    def state_dict(self) -> dict[str, Any]:
        return {"detector": self.detector.state_dict() if self.detector else None,
                "starting": [[_sample_state(s), v] for s, v in self.starting],
                "kept": [_sample_state(s) for s in self.kept], "count": self.count,
                "expiration": _sample_state(self.expiration) if self.expiration else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.detector = (BreathDetector.from_state(state["detector"])
                         if state["detector"] is not None else None)
        self.starting = [(_sample(s), float(v)) for s, v in state["starting"]]
        self.kept = deque(_sample(s) for s in state["kept"])
        self.count = int(state["count"])
        self.expiration = _sample(state["expiration"]) if state["expiration"] else None


class LiveParameters:
    """Each breath's parameters, from the preview volumes of its frames and (when the main
    method ran on it) the main method's tidal image.

    - `preview`: `worker.ventilation.breath_parameters` on the preview volumes of the breath's
      frames (start to end): TIV, EELI, ΔEELI against the first breath's EELI, regional
      distribution, CoV, GI, silent spaces, RVD. Lung region: the functional mask of the mean
      preview tidal image of the breaths so far. No heart filter (it needs 10 s around each
      frame).
    - `tidal`: `worker.ventilation.regional` on the main method's tidal image of the breath
      (clinical sign: minus the reconstructed Δσ/σ0 tidal difference), with its own lung
      region (the mean of the main method's tidal images so far); `tiv` is its sum over that
      region. Absent when the main method has not reconstructed that breath's peak.
    """

    def __init__(self, body_mask: np.ndarray, space: VoxelSpace, ring_z: tuple[float, ...] = (),
                 settings: AnalysisSettings | None = None) -> None:
        self.body_mask, self.space, self.ring_z = body_mask, space, ring_z
        self.settings = settings or AnalysisSettings()
        self.index = 0
        self.eeli_baseline: float | None = None
        self.preview_sum = np.zeros(body_mask.shape)
        self.tidal_sum = np.zeros(body_mask.shape)
        self.tidal: tuple[int, np.ndarray] | None = None  # (peak index, main tidal volume)

    def record_tidal(self, tidal: Tidal, volume: np.ndarray) -> None:
        """The main method's tidal image (Δσ/σ0) of the breath whose peak is `tidal`'s."""
        self.tidal = (tidal.inspiration.index, np.asarray(volume, dtype=np.float32))

    def breath(self, end: BreathEnd, previews: np.ndarray, method: str,
               preview_method: str) -> dict[str, Any]:
        """The JSON-ready parameters of one breath; `previews` (T, P, R, C) are the preview
        volumes of `end.samples`."""
        b, samples = end.breath, end.samples
        times = np.array([s.timestamp for s in samples])
        local = Breath.at(times, b.start - samples[0].index, b.end_inspiration - samples[0].index,
                          b.end - samples[0].index)
        voxels = voxel_impedance(previews, self.body_mask)
        image = np.zeros(self.body_mask.shape)
        image[self.body_mask] = voxels[local.end_inspiration] - voxels[local.start]
        self.preview_sum += image
        lung = lung_region(self.preview_sum, self.body_mask, self.space,
                           self.settings.lung_fraction, self.settings.mirror_lung)
        lung_curve = voxels[:, lung[self.body_mask]].sum(axis=1)
        if self.eeli_baseline is None:
            self.eeli_baseline = float(lung_curve[local.end])
        params, _, _ = breath_parameters(self.index, local, voxels, lung_curve, lung,
                                         self.body_mask, self.space, times, self.eeli_baseline,
                                         self.ring_z, self.settings)
        preview = params.as_dict()
        del preview["frames"]
        out: dict[str, Any] = {
            "index": self.index, "start_s": b.start_s, "end_inspiration_s": b.end_inspiration_s,
            "end_s": b.end_s,
            "seq": {"start": samples[local.start].seq,
                    "end_inspiration": samples[local.end_inspiration].seq,
                    "end": samples[local.end].seq},
            "preview": {"method": preview_method, **preview}, "tidal": None}
        if self.tidal is not None and self.tidal[0] == b.end_inspiration:
            out["tidal"] = {"method": method, **self._tidal_parameters(-self.tidal[1])}
        self.index += 1
        return json_safe(out)

    def _tidal_parameters(self, image: np.ndarray) -> dict[str, Any]:
        image = np.where(self.body_mask, image, 0.0)
        self.tidal_sum += image
        lung = lung_region(self.tidal_sum, self.body_mask, self.space,
                           self.settings.lung_fraction, self.settings.mirror_lung)
        reg = regional(image, lung, self.space, self.ring_z, self.settings.position,
                       self.settings.silent_fraction)
        return {"tiv": float(image[lung].sum()), **asdict(reg)}

    def state_dict(self) -> dict[str, Any]:
        return {"index": self.index, "eeli_baseline": self.eeli_baseline,
                "preview_sum": self.preview_sum, "tidal_sum": self.tidal_sum,
                "tidal": list(self.tidal) if self.tidal is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.index = int(state["index"])
        baseline = state["eeli_baseline"]
        self.eeli_baseline = float(baseline) if baseline is not None else None
        self.preview_sum = np.asarray(state["preview_sum"], dtype=np.float64)
        self.tidal_sum = np.asarray(state["tidal_sum"], dtype=np.float64)
        tidal = state["tidal"]
        self.tidal = (int(tidal[0]), np.asarray(tidal[1])) if tidal is not None else None


@dataclass
class BreathPolicy:
    """A session's breath scheduling and its parameters (its state goes into checkpoints)."""

    tracker: BreathTracker
    parameters: LiveParameters

    @classmethod
    def for_model(cls, model: ForwardModel, position: str = "supine") -> BreathPolicy:
        """Voxel space and ring heights from the model's geometry; the body mask its mask;
        gravity from the patient's `position` (the session's)."""
        dom = model.geometry.domain
        space = VoxelSpace.from_extent(model.grid.shape, dom.width, dom.depth, dom.height)
        rings = tuple(float(z) for z in model.geometry.electrodes.ring_heights)
        return cls(BreathTracker(), LiveParameters(model.mask, space, rings,
                                                   AnalysisSettings(position=position)))

    def state_dict(self) -> dict[str, Any]:
        return {"tracker": self.tracker.state_dict(),
                "parameters": self.parameters.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tracker.load_state_dict(state["tracker"])
        self.parameters.load_state_dict(state["parameters"])
