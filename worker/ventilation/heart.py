"""Heart rate: detected in the voxel signals and filtered out of the ventilation signal.

The reference is eitprocessing (v1.8): `RateDetection` and the `MDNFilter` (multiple digital
notch), implemented here independently.

Rates (`detect_rates`): Welch power spectra (Hann window of `welch_window_s`, 50 % overlap,
mean removed) of the summed signal and of every voxel. The respiratory rate is the summed
signal's strongest frequency within its range. Each voxel's spectrum is normalised to unit sum
and the normalised spectra are averaged; the heart rate is the strongest frequency of that
average minus the summed signal's normalised spectrum (the heart dominates the many
low-amplitude voxels, ventilation the sum). Both peaks are refined by parabolic interpolation
over the three bins around the maximum (not at the range's edge).

Filter (`mdn_filter`): zero-phase Butterworth band-stops (order 10, `sosfiltfilt`) at every
harmonic k·f_h ± 10/min whose band starts below the noise limit (220/min), the first one no
lower than (f_h + f_r)/2, then a zero-phase low-pass at 220/min.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import signal

MINUTE = 60.0
# (min, max) rates per minute, eitprocessing's DEFAULT_RATE_LIMITS
RATE_LIMITS_PER_MIN = {
    "adult": {"respiratory": (6.0, 60.0), "heart": (40.0, 200.0)},
    "neonate": {"respiratory": (15.0, 85.0), "heart": (90.0, 210.0)},
}
MIN_WELCH_WINDOW_S = 10.0


@dataclass(frozen=True)
class Rates:
    """Respiratory and heart rate, Hz."""

    respiratory_hz: float
    heart_hz: float

    @property
    def respiratory_per_min(self) -> float:
        return self.respiratory_hz * MINUTE

    @property
    def heart_per_min(self) -> float:
        return self.heart_hz * MINUTE


def _refined_peak(freqs: np.ndarray, power: np.ndarray, low: float, high: float) -> float:
    """Frequency of the largest `power` within [low, high] Hz, refined by a parabola through
    the peak bin and its neighbours when the peak is not at the range's edge."""
    inside = np.flatnonzero((freqs >= low) & (freqs <= high))
    if inside.size == 0:
        raise ValueError(f"no spectral bin between {low * MINUTE:.0f} and {high * MINUTE:.0f}/min")
    f, p = freqs[inside], power[inside]
    k = int(np.argmax(p))
    if k == 0 or k == p.size - 1:
        return float(f[k])
    left, mid, right = p[k - 1], p[k], p[k + 1]
    curvature = left - 2 * mid + right
    if curvature == 0:
        return float(f[k])
    return float(f[k] + 0.5 * (left - right) / curvature * (f[k + 1] - f[k - 1]) / 2)


def detect_rates(voxels: np.ndarray, rate: float,
                 subject: Literal["adult", "neonate"] = "adult",
                 welch_window_s: float = 30.0, welch_overlap: float = 0.5) -> Rates:
    """Respiratory and heart rate of (T, V) voxel signals sampled at `rate` frames/s."""
    if welch_window_s < MIN_WELCH_WINDOW_S:
        raise ValueError(f"welch_window_s: at least {MIN_WELCH_WINDOW_S} s")
    voxels = np.asarray(voxels, dtype=np.float64)
    n = voxels.shape[0]
    segment = min(int(welch_window_s * rate), n)
    window = signal.windows.hann(segment, sym=False)
    options = {"fs": rate, "nperseg": segment, "noverlap": int(segment * welch_overlap),
               "detrend": "constant", "window": window}
    freqs, total = signal.welch(voxels.sum(axis=1), **options)
    _, each = signal.welch(voxels, axis=0, **options)
    sums = each.sum(axis=0)
    live = sums > 0
    mean_normalised = (each[:, live] / sums[live]).mean(axis=1)
    difference = mean_normalised - total / total.sum()
    limits = {k: (lo / MINUTE, hi / MINUTE) for k, (lo, hi) in RATE_LIMITS_PER_MIN[subject].items()}
    return Rates(_refined_peak(freqs, total, *limits["respiratory"]),
                 _refined_peak(freqs, difference, *limits["heart"]))


def mdn_filter(data: np.ndarray, rate: float, rates: Rates, axis: int = 0,
               notch_half_width_hz: float = 10 / MINUTE,
               noise_limit_hz: float = 220 / MINUTE, order: int = 10) -> np.ndarray:
    """`data` with the heart's harmonics and everything above `noise_limit_hz` removed
    (zero phase, along `axis`)."""
    if not 0 < rates.respiratory_hz < rates.heart_hz:
        raise ValueError(f"rates: need 0 < respiratory < heart rate, got {rates}")
    nyquist = rate / 2
    out = np.asarray(data, dtype=np.float64)
    harmonics = math.floor((noise_limit_hz + notch_half_width_hz) / rates.heart_hz)
    for k in range(1, harmonics + 1):
        low = k * rates.heart_hz - notch_half_width_hz
        high = k * rates.heart_hz + notch_half_width_hz
        if k == 1:
            low = max(low, (rates.heart_hz + rates.respiratory_hz) / 2)
        if high >= nyquist:
            break
        sos = signal.butter(order, [low, high], btype="bandstop", fs=rate, output="sos")
        out = signal.sosfiltfilt(sos, out, axis=axis)
    if noise_limit_hz < nyquist:
        sos = signal.butter(order, noise_limit_hz, btype="low", fs=rate, output="sos")
        out = signal.sosfiltfilt(sos, out, axis=axis)
    return out
