"""Breath detection on the global impedance curve, offline and online.

The definition is eitprocessing's `BreathDetection` (EIT-ALIVE, v1.8), implemented here
independently:

1. outliers: samples beyond mean ± m·|mean - p-th percentile| (m = 4, p = 5 below, 100 - p
   above) are replaced by the nearest valid sample; breaths within 0.5 s of one are dropped;
2. a 15 s centred moving average with a Blackman window (edges padded with the end values);
3. peaks above it and valleys below it, each at least 2/3 s apart (`scipy.signal.find_peaks`);
4. the first (last) valley is dropped when the curve before (after) it never reaches the
   moving average at the valley; peaks outside the first and last valley are dropped;
5. strict alternation: of several peaks between two valleys the highest stays, of several
   valleys between two peaks the lowest;
6. breaths whose amplitude (peak minus the mean of its two valleys) is under 25 % of the median
   amplitude lose their peak, and step 5 merges their valleys.

A breath is valley -> peak -> valley: start of inspiration (end-expiration of the previous
breath), end of inspiration, end of expiration. `BreathDetector` runs the same steps online on
a trailing window and reports each turning point `confirm_s` after it.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy.signal import find_peaks

from worker.ventilation.signal import sample_frequency


@dataclass(frozen=True)
class BreathDetectionSettings:
    """Parameters of the detection; the defaults are eitprocessing's."""

    minimum_duration_s: float = 2 / 3
    averaging_window_s: float = 15.0
    amplitude_cutoff_fraction: float = 0.25
    outlier_percentile: float = 5.0
    outlier_multiplier: float = 4.0
    outlier_margin_s: float = 0.5


@dataclass(frozen=True)
class Breath:
    """One breath as frame indices and their times (s): start of inspiration, end of
    inspiration (peak), end of expiration."""

    start: int
    end_inspiration: int
    end: int
    start_s: float
    end_inspiration_s: float
    end_s: float

    @classmethod
    def at(cls, frame_times: np.ndarray, start: int, end_inspiration: int, end: int) -> Breath:
        if not start < end_inspiration < end:
            raise ValueError(f"breath: frames {start}, {end_inspiration}, {end} are not in order")
        return cls(int(start), int(end_inspiration), int(end), float(frame_times[start]),
                   float(frame_times[end_inspiration]), float(frame_times[end]))

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


def replace_outliers(values: np.ndarray, settings: BreathDetectionSettings
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(cleaned copy, boolean outlier flags): outliers take the nearest valid sample's value
    (the earlier one on a tie)."""
    values = np.asarray(values, dtype=np.float64)
    mean = values.mean()
    low = np.percentile(values, settings.outlier_percentile)
    high = np.percentile(values, 100.0 - settings.outlier_percentile)
    m = settings.outlier_multiplier
    outlier = (values < mean - m * (mean - low)) | (values > mean + m * (high - mean))
    if not outlier.any():
        return values.copy(), outlier
    valid = np.flatnonzero(~outlier)
    if valid.size == 0:
        raise ValueError("global curve: every sample is an outlier")
    bad = np.flatnonzero(outlier)
    after = np.clip(np.searchsorted(valid, bad), 0, valid.size - 1)
    before = np.clip(after - 1, 0, valid.size - 1)
    use_before = np.abs(bad - valid[before]) <= np.abs(valid[after] - bad)
    cleaned = values.copy()
    cleaned[bad] = values[np.where(use_before, valid[before], valid[after])]
    return cleaned, outlier


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Centred Blackman-weighted moving average over an odd `window` of samples (shortened to
    the longest odd window the data holds), edges padded with the end values."""
    n = values.size
    window = window + 1 - window % 2
    if window > n:
        window = n if n % 2 else n - 1
    if window < 3:
        return values.astype(np.float64, copy=True)
    weights = np.blackman(window)
    weights /= weights.sum()
    half = window // 2
    return np.convolve(np.pad(values, half, mode="edge"), weights, mode="valid")


def _alternate(values: np.ndarray, peaks: np.ndarray, valleys: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """Strict valley-peak-valley alternation: of consecutive peaks the highest stays, of
    consecutive valleys the lowest (the earlier on a tie); a leading peak and a trailing peak
    are dropped."""
    events = sorted([(int(v), False) for v in valleys] + [(int(p), True) for p in peaks])
    kept: list[tuple[int, bool]] = []
    for index, is_peak in events:
        if not kept:
            if not is_peak:
                kept.append((index, is_peak))
            continue
        last, last_is_peak = kept[-1]
        if last_is_peak != is_peak:
            kept.append((index, is_peak))
        elif (values[index] > values[last]) if is_peak else (values[index] < values[last]):
            kept[-1] = (index, is_peak)
    if kept and kept[-1][1]:
        kept.pop()
    out_peaks = np.array([i for i, p in kept if p], dtype=int)
    out_valleys = np.array([i for i, p in kept if not p], dtype=int)
    return out_peaks, out_valleys


def find_turning_points(values: np.ndarray, rate: float,
                        settings: BreathDetectionSettings | None = None,
                        closed_end: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(peaks, valleys) frame indices of an outlier-free curve (steps 2-6 of the module).

    With `closed_end=False` (online), the last valley is kept even when the curve has not yet
    risen back to the moving average after it. Valleys number peaks + 1, or both are empty.
    """
    settings = settings or BreathDetectionSettings()
    values = np.asarray(values, dtype=np.float64)
    empty = np.array([], dtype=int)
    if values.size < 3:
        return empty, empty
    baseline = moving_average(values, int(rate * settings.averaging_window_s))
    distance = max(settings.minimum_duration_s * rate, 1.0)
    peaks, _ = find_peaks(values, distance=distance, height=baseline)
    valleys, _ = find_peaks(-values, distance=distance, height=-baseline)
    if valleys.size < 2 or peaks.size < 1:
        return empty, empty
    if values[:valleys[0]].max() < baseline[valleys[0]]:
        valleys = valleys[1:]
    if closed_end and valleys.size and values[valleys[-1]:].max() < baseline[valleys[-1]]:
        valleys = valleys[:-1]
    if valleys.size < 2:
        return empty, empty
    peaks = peaks[(peaks > valleys[0]) & (peaks < valleys[-1])]
    peaks, valleys = _alternate(values, peaks, valleys)
    if peaks.size and settings.amplitude_cutoff_fraction:
        amplitude = values[peaks] - 0.5 * (values[valleys[:-1]] + values[valleys[1:]])
        keep = amplitude >= settings.amplitude_cutoff_fraction * np.median(amplitude)
        peaks, valleys = _alternate(values, peaks[keep], valleys)
    if peaks.size == 0:
        return empty, empty
    return peaks, valleys


def _near_outlier(outlier: np.ndarray, start: int, end: int, margin: int) -> bool:
    return bool(outlier[max(0, start - margin):end + margin].any())


def detect_breaths(values: np.ndarray, frame_times: np.ndarray,
                   settings: BreathDetectionSettings | None = None) -> list[Breath]:
    """The breaths of a global impedance curve (clinical sign: it rises on inspiration)."""
    settings = settings or BreathDetectionSettings()
    frame_times = np.asarray(frame_times, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    if values.shape != frame_times.shape:
        raise ValueError(f"global curve {values.shape} and frame_times {frame_times.shape} differ")
    if values.size < 3:
        return []
    rate = sample_frequency(frame_times)
    cleaned, outlier = replace_outliers(values, settings)
    peaks, valleys = find_turning_points(cleaned, rate, settings)
    margin = int(np.ceil(settings.outlier_margin_s * rate))
    return [Breath.at(frame_times, start, peak, end)
            for peak, start, end in zip(peaks, valleys[:-1], valleys[1:], strict=True)
            if not _near_outlier(outlier, start, end, margin)]


@dataclass(frozen=True)
class TurningPoint:
    """An end-expiration (valley) or end-inspiration (peak) found online."""

    kind: Literal["end_expiration", "end_inspiration"]
    index: int
    time_s: float


@dataclass
class DetectorUpdate:
    """What one sample confirmed: turning points (in time order) and whole breaths."""

    turning_points: list[TurningPoint] = field(default_factory=list)
    breaths: list[Breath] = field(default_factory=list)


class BreathDetector:
    """Online breath detection, one global-curve sample at a time, by the offline definition.

    Offline, after step 5, a valley is the lowest sample between two peaks and lies below the
    moving average; a peak is the highest sample between two valleys and lies above it. Online,
    the detector alternates between seeking a valley (the lowest sample since the last peak)
    and a peak (the highest since the last valley). A candidate is confirmed, and reported,
    once it is `confirm_s` old, on the right side of the moving average at it, at least
    2/3 s after the previous turning point of its kind, and the curve has since moved away
    from it by `hysteresis` x the reference amplitude (the median amplitude of the last ten
    breaths; before the first breath, the 5-95 % range of the curve so far, and nothing is
    confirmed in the first `warmup_s`, so that this range spans a breath). The moving average
    at a candidate is the offline one with the samples still to come replaced by the newest
    (the offline edge padding); outliers use the offline cut-offs on the trailing `history_s`
    of raw samples and take the previous sample's value. A peak that is exceeded before the
    next valley is confirmed is sought again (and reported again).

    Differences from the offline result, by construction: the first valley needs the curve to
    have crossed the moving average before it (the offline edge rule); a breath whose
    amplitude falls under the cut-off (`amplitude_cutoff_fraction` x the reference) is not
    reported and its valleys are merged into the later one only when that one is lower, since
    the earlier breath was already reported; a breath still open at the end is never reported.
    After a pause longer than `history_s` the detector starts afresh (edge rule included).
    Frame indices count the samples pushed since creation.
    """

    def __init__(self, rate: float, settings: BreathDetectionSettings | None = None,
                 confirm_s: float = 0.5, hysteresis: float = 0.1, warmup_s: float = 5.0,
                 history_s: float = 45.0) -> None:
        self.settings = settings or BreathDetectionSettings()
        self.rate = float(rate)
        self._options = {"confirm_s": confirm_s, "hysteresis": hysteresis,
                         "warmup_s": warmup_s, "history_s": history_s}
        half = int(rate * self.settings.averaging_window_s) // 2
        if history_s * rate < 2 * half + 1:
            raise ValueError("history_s: keep at least one averaging window of the curve")
        self._weights = np.blackman(2 * half + 1)
        self._weights /= self._weights.sum()
        self._half = half
        self._confirm = max(1, int(round(confirm_s * rate)))
        self._distance = max(1, int(np.ceil(self.settings.minimum_duration_s * rate)))
        self._margin = int(np.ceil(self.settings.outlier_margin_s * rate))
        self.hysteresis = hysteresis
        self._warmup = int(round(warmup_s * rate))
        size = int(round(history_s * rate))
        self._times: deque[float] = deque(maxlen=size)
        self._values: deque[float] = deque(maxlen=size)
        self._raw: deque[float] = deque(maxlen=size)
        self._amplitudes: deque[float] = deque(maxlen=10)
        self._outliers: deque[int] = deque()
        self._count = 0
        self._seeking: Literal["valley", "peak"] = "valley"
        self._candidate = 0
        self._valley: int | None = None  # the last reported valley
        self._peak: int | None = None  # the confirmed peak after it
        self._last_peak = -self._distance
        self._armed = False

    # the state that changes sample by sample (`state_dict`): deques, then scalars
    _DEQUES = ("_times", "_values", "_raw", "_amplitudes", "_outliers")
    _SCALARS = ("_count", "_seeking", "_candidate", "_valley", "_peak", "_last_peak", "_armed")

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly where this detector stands (plain values and
        arrays, for the worker's checkpoints)."""
        return {"rate": self.rate, "settings": dataclasses.asdict(self.settings),
                "options": dict(self._options),
                **{name: np.asarray(getattr(self, name),
                                    dtype=np.int64 if name == "_outliers" else np.float64)
                   for name in self._DEQUES},
                **{name: getattr(self, name) for name in self._SCALARS}}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> BreathDetector:
        """The detector `state_dict` captured."""
        detector = cls(state["rate"], BreathDetectionSettings(**state["settings"]),
                       **state["options"])
        for name in cls._DEQUES:
            target = getattr(detector, name)
            target.extend(np.asarray(state[name]).tolist())
        for name in cls._SCALARS:
            value = state[name]
            setattr(detector, name, value if value is None or isinstance(value, (bool, str))
                    else int(value))
        return detector

    def _value(self, index: int) -> float:
        return self._values[index - (self._count - len(self._values))]

    def _time(self, index: int) -> float:
        return self._times[index - (self._count - len(self._times))]

    def _baseline(self, index: int) -> float:
        """The offline moving average at `index`, samples not yet seen padded by the newest."""
        first = self._count - len(self._values)
        values = np.fromiter(self._values, dtype=np.float64, count=len(self._values))
        lo, hi = index - self._half - first, index + self._half + 1 - first
        window = np.concatenate([np.full(max(0, -lo), values[0]), values[max(lo, 0):hi],
                                 np.full(max(0, hi - values.size), values[-1])])
        return float(window @ self._weights)

    def _reference(self) -> float:
        if self._amplitudes:
            return float(np.median(self._amplitudes))
        values = np.fromiter(self._values, dtype=np.float64, count=len(self._values))
        return float(np.percentile(values, 95) - np.percentile(values, 5))

    def _clean(self, value: float) -> float:
        """`value`, or the previous sample's when it is an outlier by the offline cut-offs
        (computed on the raw samples, so that a new level is accepted once it is common)."""
        self._raw.append(value)
        if len(self._raw) < self._distance:
            return value
        raw = np.fromiter(self._raw, dtype=np.float64, count=len(self._raw))
        mean = raw.mean()
        low, high = np.percentile(raw, [self.settings.outlier_percentile,
                                        100.0 - self.settings.outlier_percentile])
        m = self.settings.outlier_multiplier
        if mean - m * (mean - low) <= value <= mean + m * (high - mean):
            return value
        self._outliers.append(self._count)
        return self._values[-1]

    def push(self, time_s: float, value: float) -> DetectorUpdate:
        """Add one sample; return the turning points and breaths it confirmed."""
        value = self._clean(float(value))
        self._times.append(float(time_s))
        self._values.append(value)
        self._count += 1
        first = self._count - len(self._values)
        while self._outliers and self._outliers[0] < first:
            self._outliers.popleft()
        if self._valley is not None and self._valley < first:  # a pause longer than history
            self._valley, self._peak, self._armed = None, None, False
            self._seeking, self._candidate = "valley", self._count - 1
        elif self._candidate < first:  # the candidate left the history: the extreme in it
            extreme = np.argmax if self._seeking == "peak" else np.argmin
            self._candidate = first + int(extreme(self._values))
        update = DetectorUpdate()
        if self._count == self._warmup:  # replay the warm-up with its amplitude range
            for now in range(first, self._count):
                self._step(now, update)
        elif self._count > self._warmup:
            self._step(self._count - 1, update)
        return update

    def _step(self, now: int, update: DetectorUpdate) -> None:
        if self._seeking == "valley":
            self._seek_valley(now, self._value(now), update)
        else:
            self._seek_peak(now, self._value(now), update)

    def _seek_valley(self, now: int, value: float, update: DetectorUpdate) -> None:
        if self._peak is not None and value > self._value(self._peak):
            # the peak was not the highest: seek it again (no spacing from the one it replaces)
            self._seeking, self._candidate = "peak", now
            self._last_peak = -self._distance
            return
        if self._valley is None and not self._armed:
            # the offline edge rule: the first valley follows a sample above the average
            self._armed = value > self._baseline(now)
            self._candidate = now
            return
        if value < self._value(self._candidate):
            self._candidate = now
        c = self._candidate
        if (now - c < self._confirm
                or value - self._value(c) < self.hysteresis * self._reference()
                or self._value(c) >= self._baseline(c)):
            return
        if self._valley is not None and (self._peak is None or c - self._valley < self._distance):
            return
        self._report_valley(c, update)
        self._seeking = "peak"
        self._candidate = c + int(np.argmax([self._value(i) for i in range(c, now + 1)]))

    def _report_valley(self, c: int, update: DetectorUpdate) -> None:
        start, peak = self._valley, self._peak
        if start is not None and peak is not None:
            amplitude = self._value(peak) - 0.5 * (self._value(start) + self._value(c))
            if amplitude < (self.settings.amplitude_cutoff_fraction or 0.0) * self._reference():
                self._peak = None  # not a breath: merge the valleys, keep the lower
                if self._value(c) >= self._value(start):
                    return
                start = None
            else:
                self._amplitudes.append(amplitude)
                if not any(start - self._margin <= k < c + self._margin for k in self._outliers):
                    update.breaths.append(Breath(start, peak, c, self._time(start),
                                                 self._time(peak), self._time(c)))
        update.turning_points.append(TurningPoint("end_expiration", c, self._time(c)))
        self._valley, self._peak = c, None

    def _seek_peak(self, now: int, value: float, update: DetectorUpdate) -> None:
        if value > self._value(self._candidate):
            self._candidate = now
        c = self._candidate
        if (now - c < self._confirm
                or self._value(c) - value < self.hysteresis * self._reference()
                or c - self._last_peak < self._distance
                or self._value(c) <= self._baseline(c)):
            return
        self._last_peak = c
        if self._valley is not None:
            self._peak = c
            update.turning_points.append(TurningPoint("end_inspiration", c, self._time(c)))
        self._seeking = "valley"
        self._candidate = c + int(np.argmin([self._value(i) for i in range(c, now + 1)]))
