"""The data-quality report: a simulated belt with one broken electrode, and the real slices."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from service.contract.protocol import resolve_protocol
from service.contract.stim_patterns import mk_stim_patterns
from tests.worker.devices.conftest import CHILD, NEONATE
from worker.devices.goettingen import read_get
from worker.devices.quality import quality_report

PROTOCOL = resolve_protocol(mk_stim_patterns(16, 1, [0, 1], [0, 1])).build(16)


def disk_recording(n_frames: int = 60, seed: int = 0) -> np.ndarray:
    """Point electrodes on a homogeneous unit disk (potential of a current dipole on the
    boundary), a breathing-like gain and 0.1 % noise: T x 208."""
    angles = 2 * np.pi * np.arange(16) / 16
    points = np.exp(1j * angles)
    volts = np.empty(PROTOCOL.n_measurements)
    for k, (inj, weights) in enumerate(zip(PROTOCOL.meas_injection, PROTOCOL.meas_weights,
                                           strict=True)):
        source, sink = np.flatnonzero(PROTOCOL.currents[inj] > 0)[0], np.flatnonzero(
            PROTOCOL.currents[inj] < 0)[0]
        potential = np.log(np.abs(points - points[sink]) + 1e-12) - np.log(
            np.abs(points - points[source]) + 1e-12)
        volts[k] = weights @ potential / np.pi
    rng = np.random.default_rng(seed)
    breathing = 1 + 0.02 * np.sin(2 * np.pi * np.arange(n_frames) / 20)[:, None]
    return volts * breathing * (1 + 1e-3 * rng.standard_normal((n_frames, volts.size)))


def uses(electrode: int) -> np.ndarray:
    driven = np.abs(PROTOCOL.currents[PROTOCOL.meas_injection, electrode]) > 0
    return driven | (PROTOCOL.meas_weights[:, electrode] != 0)


def report(voltages: np.ndarray, reciprocals: bool = True) -> Any:
    return quality_report(voltages, PROTOCOL.currents, PROTOCOL.meas_injection,
                          PROTOCOL.meas_weights, reciprocals)


def test_clean_simulation_has_nothing_flagged() -> None:
    voltages = disk_recording()
    assert np.all(voltages > 0)  # EIDORS's current sign: positive adjacent voltages
    clean = report(voltages)
    assert clean.flagged == [] and clean.usable_fraction == 1.0
    assert np.nanmax(clean.electrode_reciprocity) < 0.01


@pytest.mark.parametrize("broken", [4, 11])
def test_a_broken_electrode_is_flagged(broken: int) -> None:
    """A lost contact: the measurements on the electrode lose 60 % and get 10 % noise."""
    voltages = disk_recording()
    on_it = PROTOCOL.meas_weights[:, broken] != 0
    rng = np.random.default_rng(1)
    voltages[:, on_it] *= 0.4 * (1 + 0.1 * rng.standard_normal((voltages.shape[0],
                                                                  int(on_it.sum()))))
    result = report(voltages)
    assert result.flagged == [broken]
    assert "reciprocity" in result.flags[broken] and "noisy" in result.flags[broken]
    assert not result.usable[on_it].any() and result.usable[~uses(broken)].all()
    summary = result.to_dict()
    assert summary["flagged_electrodes"] == [broken + 1]
    assert f"{broken + 1}" in result.table().splitlines()[3 + broken]


def test_a_noisy_electrode_without_reciprocity_is_flagged() -> None:
    voltages = disk_recording()
    rng = np.random.default_rng(2)
    voltages[:, uses(7)] *= 1 + 0.03 * rng.standard_normal((voltages.shape[0],
                                                            int(uses(7).sum())))
    result = report(voltages, reciprocals=False)
    assert result.electrode_reciprocity is None and 7 in result.flagged
    assert result.flags[7] == ["noisy"]


def test_real_slices() -> None:
    """What it says on the first 40 frames (docs/real-data.md has the full recordings)."""
    neonate = read_get(NEONATE)
    result = report(neonate.voltages, neonate.reciprocals_measured)
    assert result.usable_fraction == 1.0 and result.flagged == []
    assert np.nanmedian(result.electrode_reciprocity) < 0.03
    child = read_get(CHILD)
    result = report(child.voltages, child.reciprocals_measured)
    assert result.electrode_reciprocity is None and result.usable_fraction > 0.95
    assert result.flagged == [5]  # electrode 6: its channels are 3.5x the median's noise
    assert "n/a" in result.table()
