"""Heart rate detection and the MDN filter against eitprocessing's RateDetection and
MDNFilter."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from worker.ventilation.heart import Rates, detect_rates, mdn_filter

from .conftest import RATE

eitprocessing = pytest.importorskip("eitprocessing")


def _voxels(seed: int = 0, n_frames: int = 1200) -> np.ndarray:
    """(T, 40) voxel signals: 30 'lung' voxels breathing at 14/min with a faint heartbeat,
    10 'heart' voxels beating at 75/min with a faint breath."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_frames) / RATE
    breath = 0.5 * (1 - np.cos(2 * np.pi * 14 / 60 * t))
    beat = np.sin(2 * np.pi * 75 / 60 * t)
    lung = rng.uniform(0.5, 1.5, 30) * breath[:, None] + 0.02 * beat[:, None]
    heart = 0.05 * breath[:, None] + rng.uniform(0.1, 0.3, 10) * beat[:, None]
    return np.hstack([lung, heart]) + 0.01 * rng.standard_normal((n_frames, 40))


def test_rates_agree_with_eitprocessing() -> None:
    from eitprocessing.datahandling.eitdata import EITData, Vendor
    from eitprocessing.features.rate_detection import RateDetection

    voxels = _voxels()
    rates = detect_rates(voxels, RATE)
    data = EITData(path="", nframes=voxels.shape[0], time=np.arange(voxels.shape[0]) / RATE,
                   sample_frequency=RATE, vendor=Vendor.SIMULATED,
                   pixel_impedance=voxels.reshape(-1, 4, 10), suppress_simulated_warning=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        respiratory, heart = RateDetection("adult").apply(data)
    assert rates.respiratory_hz == pytest.approx(respiratory, abs=1e-3)
    assert rates.heart_hz == pytest.approx(heart, abs=1e-3)
    assert rates.respiratory_per_min == pytest.approx(14, abs=0.5)
    assert rates.heart_per_min == pytest.approx(75, abs=1.0)


def test_mdn_filter_agrees_with_eitprocessing_and_removes_the_heart() -> None:
    from eitprocessing.filters.mdn import MDNFilter

    voxels = _voxels()
    rates = Rates(14 / 60, 75 / 60)
    ours = mdn_filter(voxels, RATE, rates)
    reference = MDNFilter(respiratory_rate=rates.respiratory_hz,
                          heart_rate=rates.heart_hz).apply(voxels, sample_frequency=RATE)
    assert np.allclose(ours, reference, atol=1e-9)
    freqs = np.fft.rfftfreq(voxels.shape[0], 1 / RATE)
    beat = np.argmin(np.abs(freqs - 75 / 60))
    before = np.abs(np.fft.rfft(voxels[:, 35]))[beat]
    after = np.abs(np.fft.rfft(ours[:, 35]))[beat]
    assert after < 1e-2 * before


def test_mdn_filter_needs_ordered_rates() -> None:
    with pytest.raises(ValueError, match="respiratory < heart"):
        mdn_filter(np.zeros((100, 2)), RATE, Rates(1.2, 0.3))
