from __future__ import annotations

import numpy as np
import pytest

from service.contract.geometry import resolve_geometry
from service.contract.grid import resolve_grid
from service.contract.protocol import resolve_protocol
from worker.forward import load_model
from worker.simulation import simulate
from worker.simulation.cases import timeline
from worker.simulation.noise import measured_snr_db
from worker.simulation.simulate import Simulator, interpolation_error

from .conftest import COARSE, GRID


def test_healthy_reference_is_the_empty_thorax(healthy_clean) -> None:
    rec = healthy_clean
    assert rec.n_frames == 20 and rec.meta["reference"] == "empty"
    model = load_model(**{k: rec.meta[k] for k in ("geometry", "protocol", "grid")})
    # a different (finer) mesh: close, but not identical (no inverse crime)
    diff = np.linalg.norm(rec.reference - model.reference_voltages)
    assert 0 < diff < 0.02 * np.linalg.norm(model.reference_voltages)
    assert rec.truth.max() <= 1e-6  # lungs only lose conductivity against the background
    lung = rec.truth[-1][rec.mask]
    # full inspiration: (0.105 - 0.24)/0.24 = -0.5625 in voxels fully inside a lung
    assert lung.min() == pytest.approx(-0.5625, abs=1e-3)
    assert (rec.truth[0] < -0.1).sum() < (rec.truth[-1] < -0.1).sum()  # lungs grow


def test_edema_reference_is_the_first_frame(edema_clean) -> None:
    rec = edema_clean
    assert rec.n_frames == 5 and rec.meta["reference"] == "first"
    assert np.all(rec.frame_times > 0)
    assert rec.truth.max() <= 1e-6
    # the dorsal left lung (posterior rows, patient-left columns) never changes
    P, R, C = rec.mask.shape
    assert np.abs(rec.truth[:, P // 3, int(0.8 * R), int(0.75 * C)]).max() < 1e-6
    assert rec.truth[-1, P // 3, int(0.45 * R), int(0.25 * C)] < -0.1  # right lung ventilates


def test_tidal_reference_is_the_mean_of_end_expiration_frames() -> None:
    rec = simulate("tidal-breathing", snr_db=None, geometry=COARSE, grid=GRID, frames=200,
                   with_truth=False)
    tl = timeline("tidal-breathing", 0.24, frames=200)
    assert rec.n_frames == 200 and rec.truth is None
    assert len(tl.end_expiration) >= 2
    assert np.allclose(rec.reference, rec.voltages[tl.end_expiration].mean(axis=0))
    assert 12 <= 60 / np.diff(tl.times[tl.end_expiration]).mean() <= 15.5


def test_measured_snr_matches_the_request(edema_clean) -> None:
    noisy = simulate("edema-left", snr_db=40.0, geometry=COARSE, grid=GRID, frames=6,
                     with_truth=False)
    assert measured_snr_db(edema_clean.voltages, noisy.voltages) == pytest.approx(40.0, abs=0.5)


def test_linear_prediction_agrees_with_simulation(healthy_clean) -> None:
    """J·truth against (v - v_ref)/|v_ref| on the first frames, noiseless: the Jacobian and
    the simulation share their conventions (sign, normalisation, axes)."""
    rec = healthy_clean
    model = load_model(**{k: rec.meta[k] for k in ("geometry", "protocol", "grid")})
    dv = (rec.voltages - rec.reference) / np.abs(rec.reference)
    for k in range(3):
        pred = model.jacobian @ rec.truth[k][model.mask]
        assert np.corrcoef(pred, dv[k])[0, 1] > 0.9


def test_tidal_interpolation_matches_direct_solves() -> None:
    geo = resolve_geometry(COARSE)
    sim = Simulator.create(geo, resolve_protocol(None).build(geo.electrodes.count),
                           resolve_grid(GRID), edema=False)
    err = interpolation_error(sim, np.array([0.13, 0.71, 1.22]), np.array([0.02, -0.01, 0.0]))
    assert err < 0.01


def test_unknown_case() -> None:
    with pytest.raises(ValueError, match="unknown case"):
        simulate("asthma", geometry=COARSE, grid=GRID)
