"""The whole chain on constructed volumes: breaths, TIV, EELI, the lung region, the heart."""

from __future__ import annotations

import numpy as np
import pytest

from worker.ventilation.parameters import AnalysisSettings, analyse

from .conftest import RATE, SHAPE, breathing


def _volumes(u: np.ndarray, t: np.ndarray, cardiac: float = 0.0) -> np.ndarray:
    """Δσ/σ0 volumes: a right lung (columns 1-4) and a left lung (columns 7-10) breathing with
    lung state u, the left one half as much; a heart (rows 1-3, columns 5-6) beating."""
    volumes = np.zeros((u.size, *SHAPE))
    volumes[:, 1:5, 2:8, 1:5] = -0.1 * u[:, None, None, None]
    volumes[:, 1:5, 2:8, 7:11] = -0.05 * u[:, None, None, None]
    volumes[:, 1:5, 1:4, 5:7] = cardiac * np.sin(2 * np.pi * 1.2 * t)[:, None, None, None]
    return volumes


def test_analysis_of_constructed_volumes(body, space) -> None:
    t, _, u = breathing(4, duration=60.0)
    analysis = analyse(_volumes(u, t), t, body, space, ring_z=(0.05,),
                       settings=AnalysisSettings(heart_filter=False))
    assert len(analysis.breaths) >= 10
    lung = np.zeros(SHAPE, dtype=bool)
    lung[1:5, 2:8, 1:5] = lung[1:5, 2:8, 7:11] = True
    assert np.array_equal(analysis.lung_mask, lung)
    for params in analysis.breaths:
        b = params.breath
        tidal = u[b.end_inspiration] - u[b.start]
        assert params.tiv == pytest.approx(tidal * (0.1 + 0.05) * 96, rel=1e-6)
        assert params.regional.left_pct == pytest.approx(100 / 3, abs=1e-6)
        assert params.regional.cov_z_pct == pytest.approx(50.0, abs=1e-6)
        assert params.regional.silent_pct == 0.0
        assert params.eeli == pytest.approx(0.15 * 96 * u[b.end], abs=1e-9)  # 96 lung voxels
    assert analysis.breaths[0].delta_eeli == 0.0
    assert analysis.tidal_images.shape == (len(analysis.breaths), *SHAPE)
    summary = analysis.summary()
    assert summary["breaths"] == len(analysis.breaths)
    assert summary["respiratory_rate_per_min"] == pytest.approx(60 / 4.4, rel=0.1)
    assert summary["mean"]["left_pct"] == pytest.approx(100 / 3, abs=1e-6)


def test_heart_is_detected_and_filtered(body, space) -> None:
    t, _, u = breathing(5, duration=60.0)
    volumes = _volumes(u, t, cardiac=0.05)
    analysis = analyse(volumes, t, body, space)
    assert analysis.heart_filtered
    assert analysis.rates.heart_per_min == pytest.approx(72, abs=1.5)
    assert analysis.rates.respiratory_per_min == pytest.approx(60 / 4.4, rel=0.1)
    heart = np.zeros(SHAPE, dtype=bool)
    heart[1:5, 1:4, 5:7] = True
    assert not (analysis.lung_mask & heart).any()


def test_eeli_baseline_and_silent_lung(body, space) -> None:
    """The left lung stops ventilating: mirror keeps it in the region as silent, dependent
    only where dorsal to the centre of ventilation."""
    t, _, u = breathing(6, duration=40.0, cardiac=0.0)
    volumes = _volumes(u, t)
    volumes[:, :, :, 7:11] = 0.0
    analysis = analyse(volumes, t, body, space,
                       settings=AnalysisSettings(heart_filter=False, eeli_baseline="reference"))
    assert analysis.eeli_baseline == 0.0
    params = analysis.breaths[0]
    assert params.delta_eeli == params.eeli
    assert params.regional.left_pct == pytest.approx(0.0)
    assert params.regional.silent_pct == pytest.approx(50.0)
    assert params.regional.silent_dependent_pct == pytest.approx(25.0)


def test_too_short_for_a_breath(body, space) -> None:
    t = np.arange(40) / RATE
    analysis = analyse(np.zeros((40, *SHAPE)), t, body, space)
    assert analysis.breaths == [] and analysis.summary()["respiratory_rate_per_min"] is None
    assert any("shorter" in note for note in analysis.notes)
    assert any("no complete breath" in note for note in analysis.notes)


def test_constant_volumes_have_no_rates(body, space) -> None:
    t = np.arange(400) / RATE
    analysis = analyse(np.zeros((400, *SHAPE)), t, body, space)
    assert analysis.rates is None and not analysis.heart_filtered
    assert any("constant" in note for note in analysis.notes)
