"""Breath detection against eitprocessing's BreathDetection, TIV and EELI, and online vs
offline."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from worker.ventilation.breaths import (
    BreathDetectionSettings,
    BreathDetector,
    detect_breaths,
    moving_average,
    replace_outliers,
)
from worker.ventilation.heart import Rates, mdn_filter

from .conftest import CARDIAC_HZ, RATE, breathing

eitprocessing = pytest.importorskip("eitprocessing")


def _reference(t: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """eitprocessing's breaths (start, middle, end times), TIV and EELI of the curve."""
    from eitprocessing.datahandling.continuousdata import ContinuousData
    from eitprocessing.features.breath_detection import BreathDetection
    from eitprocessing.parameters.eeli import EELI
    from eitprocessing.parameters.tidal_impedance_variation import TIV

    data = ContinuousData(label="global", name="global", unit="a.u.", category="impedance",
                          time=t, values=y, sample_frequency=RATE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        breaths = np.array([tuple(b) for b in BreathDetection().find_breaths(data).values])
        tiv = np.asarray(TIV().compute_parameter(data).values)
        eeli = np.asarray(EELI().compute_parameter(data).values)
    return breaths, tiv, eeli


@pytest.mark.parametrize("seed", range(6))
def test_offline_detection_agrees_with_eitprocessing(seed: int) -> None:
    """Noise, a cardiac component, EELI drift and (odd seeds) an outlier spike: the same breath
    count, the same frames, the same TIV and EELI."""
    t, y, _ = breathing(seed, spikes=seed % 2)
    ref_breaths, ref_tiv, ref_eeli = _reference(t, y)
    ours = detect_breaths(y, t)
    times = np.array([(b.start_s, b.end_inspiration_s, b.end_s) for b in ours])
    assert len(ours) == len(ref_breaths) >= 20
    assert np.abs(times - ref_breaths).max() <= 1.0 / RATE + 1e-9
    tiv = np.array([y[b.end_inspiration] - y[b.start] for b in ours])
    eeli = np.array([y[b.end] for b in ours])
    assert np.allclose(tiv, ref_tiv, rtol=1e-9, atol=1e-12)
    assert np.allclose(eeli, ref_eeli, rtol=1e-9, atol=1e-12)


def test_detection_finds_the_generated_breaths() -> None:
    t, y, u = breathing(3, cardiac=0.0, noise=0.005, drift=0.0)
    starts = np.flatnonzero((u[1:-1] <= u[:-2]) & (u[1:-1] < u[2:]) & (u[1:-1] < 1e-3)) + 1
    breaths = detect_breaths(y, t)
    # every detected start is a generated one (within 0.15 s: noise moves the flat minimum);
    # the first and the last generated breaths may be cut by the recording's ends
    assert len(starts) - 3 <= len(breaths) <= len(starts)
    for breath in breaths:
        assert np.abs(starts - breath.start).min() <= 3


def test_low_amplitude_breaths_are_dropped() -> None:
    t = np.arange(0, 60, 1 / RATE)
    y = 0.5 * (1 - np.cos(2 * np.pi * t / 5.0))
    bump = (t > 22.4) & (t < 25.0)  # a small extra bump in the end-expiratory pause
    y[bump] += 0.1 * np.sin(np.pi * (t[bump] - 22.4) / 2.6) ** 2
    ours = detect_breaths(y, t)
    ref, _, _ = _reference(t, y)
    assert len(ours) == len(ref)
    assert all(b.end_s - b.start_s > 4 for b in ours)


def test_outliers_take_the_nearest_valid_value() -> None:
    y = np.zeros(200)
    y[::10] = 1.0
    y[50] = 100.0
    cleaned, outlier = replace_outliers(y, BreathDetectionSettings())
    assert outlier.sum() == 1 and outlier[50]
    assert cleaned[50] == 0.0  # neighbours 49 and 51 are 0


def test_moving_average_of_a_constant_and_a_short_curve() -> None:
    assert np.allclose(moving_average(np.full(50, 3.0), 301), 3.0)
    assert moving_average(np.arange(4.0), 301).shape == (4,)


def _online(t: np.ndarray, y: np.ndarray, **kwargs) -> tuple[list, list[float]]:
    detector = BreathDetector(RATE, **kwargs)
    breaths, delays = [], []
    for time_s, value in zip(t, y, strict=True):
        update = detector.push(time_s, value)
        breaths += update.breaths
        delays += [time_s - p.time_s for p in update.turning_points if time_s > 6.0]
    return breaths, delays


@pytest.mark.parametrize("seed", range(4))
def test_online_detection_agrees_with_offline(seed: int) -> None:
    """On the heart-filtered curve every offline breath but the first is found online at the
    same frames; online reports at most one more breath, at the end (offline drops the last
    valley until the curve has risen back to the moving average). Turning points come
    0.5-1 s after they happen."""
    t, y, _ = breathing(seed)
    y = mdn_filter(y, RATE, Rates(13.6 / 60, CARDIAC_HZ))
    offline = {(b.start, b.end_inspiration, b.end) for b in detect_breaths(y, t)}
    breaths, delays = _online(t, y)
    online = {(b.start, b.end_inspiration, b.end) for b in breaths}
    first = min(offline)
    assert offline - online <= {first}
    assert len(online - offline) <= 1 and all(b[0] >= max(offline)[0] for b in online - offline)
    assert np.median(delays) <= 0.55 and max(delays) <= 1.0


def test_online_detection_on_the_raw_curve() -> None:
    """Unfiltered (cardiac ripple and noise): offline splits a few breaths at noisy crossings
    of the moving average; online keeps them whole. Most breaths agree exactly."""
    t, y, _ = breathing(2)
    offline = {(b.start, b.end_inspiration, b.end) for b in detect_breaths(y, t)}
    breaths, delays = _online(t, y)
    online = {(b.start, b.end_inspiration, b.end) for b in breaths}
    assert len(offline & online) >= 0.75 * len(offline)
    assert all(b.end_s - b.start_s >= 2.0 for b in breaths)
    assert max(delays) <= 1.2


def test_online_reports_no_breath_during_apnoea() -> None:
    """After breathing, a flat noisy pause: the hysteresis scales with the breaths' amplitude,
    so the noise confirms nothing."""
    t, y, _ = breathing(1, duration=60.0, cardiac=0.0)
    rng = np.random.default_rng(0)
    pause = y[-1] + 1e-3 * rng.standard_normal(400)
    detector = BreathDetector(RATE)
    breathing_updates = [detector.push(time_s, value) for time_s, value in zip(t, y, strict=True)]
    assert sum(len(u.breaths) for u in breathing_updates) >= 10
    pause_updates = [detector.push(t[-1] + (k + 1) / RATE, value)
                     for k, value in enumerate(pause)]
    assert sum(len(u.breaths) for u in pause_updates[int(2 * RATE):]) == 0


def test_online_resumes_after_a_pause_longer_than_its_history() -> None:
    t, y, _ = breathing(1, duration=40.0, cardiac=0.0)
    detector = BreathDetector(RATE, history_s=30.0)
    before = sum(len(detector.push(time_s, value).breaths)
                 for time_s, value in zip(t, y, strict=True))
    for k in range(int(40 * RATE)):  # 40 s of apnoea at the last level
        detector.push(t[-1] + (k + 1) / RATE, y[-1])
    after = sum(len(detector.push(t[-1] + 40.05 + time_s, value).breaths)
                for time_s, value in zip(t, y, strict=True))
    assert before >= 5 and after >= before - 2
