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

from collections import deque
from dataclasses import dataclass, field

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

    kind: str  # "end_expiration" | "end_inspiration"
    index: int
    time_s: float


@dataclass
class DetectorUpdate:
    """What one sample completed: turning points (in time order) and whole breaths."""

    turning_points: list[TurningPoint] = field(default_factory=list)
    breaths: list[Breath] = field(default_factory=list)


class BreathDetector:
    """Online breath detection, one global-curve sample at a time.

    Every sample reruns the offline steps on the trailing `history_s` of the curve (outlier
    cut-offs and the amplitude median come from that window), with the last valley kept open
    (`find_turning_points(closed_end=False)`). A turning point is reported once it is
    `confirm_s` old and still a turning point; a breath is reported when its closing valley is.
    A breath's peak is the highest between its valleys at that moment, so it may be later than
    the end-inspiration reported first. Frame indices count the samples pushed since creation.
    """

    def __init__(self, rate: float, settings: BreathDetectionSettings | None = None,
                 history_s: float = 45.0, confirm_s: float = 0.5) -> None:
        self.settings = settings or BreathDetectionSettings()
        if history_s < 2 * self.settings.averaging_window_s:
            raise ValueError("history_s: keep at least two averaging windows of the curve")
        self.rate = float(rate)
        self._confirm = max(1, int(round(confirm_s * rate)))
        self._times: deque[float] = deque(maxlen=int(round(history_s * rate)))
        self._values: deque[float] = deque(maxlen=self._times.maxlen)
        self._pushed = 0
        self._last_valley = -1
        self._last_peak = -1

    def push(self, time_s: float, value: float) -> DetectorUpdate:
        """Add one sample; return the turning points and breaths it confirmed."""
        self._times.append(float(time_s))
        self._values.append(float(value))
        self._pushed += 1
        update = DetectorUpdate()
        offset = self._pushed - len(self._values)
        values = np.fromiter(self._values, dtype=np.float64, count=len(self._values))
        if values.size < 3:
            return update
        cleaned, outlier = replace_outliers(values, self.settings)
        peaks, valleys = find_turning_points(cleaned, self.rate, self.settings, closed_end=False)
        newest = self._pushed - 1 - self._confirm
        times = np.fromiter(self._times, dtype=np.float64, count=len(self._times))
        margin = int(np.ceil(self.settings.outlier_margin_s * self.rate))
        for peak in peaks + offset:
            if self._last_peak < peak <= newest and peak > self._last_valley:
                self._last_peak = int(peak)
                update.turning_points.append(
                    TurningPoint("end_inspiration", int(peak), float(times[peak - offset])))
        for k, valley in enumerate(valleys + offset):
            if not self._last_valley < valley <= newest:
                continue
            update.turning_points.append(
                TurningPoint("end_expiration", int(valley), float(times[valley - offset])))
            if k > 0 and valleys[k - 1] + offset >= self._last_valley >= 0:
                start, peak, end = valleys[k - 1], peaks[k - 1], valleys[k]
                if not _near_outlier(outlier, start, end, margin):
                    update.breaths.append(Breath(
                        int(start + offset), int(peak + offset), int(end + offset),
                        float(times[start]), float(times[peak]), float(times[end])))
            self._last_valley = int(valley)
        update.turning_points.sort(key=lambda point: point.index)
        return update
