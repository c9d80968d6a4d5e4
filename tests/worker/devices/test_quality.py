"""The data-quality report: a simulated belt with one broken electrode, and the real slices."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from service.contract.protocol import resolve_protocol
from service.contract.stim_patterns import mk_stim_patterns
from tests.worker.devices.conftest import CHILD, NEONATE
from worker.devices.goettingen import read_get
from worker.devices.quality import electrode_drift, quality_report
from worker.simulation.faults import DRIFT, ElectrodeFault, apply_faults

PROTOCOL = resolve_protocol(mk_stim_patterns(16, 1, [0, 1], [0, 1])).build(16)


def disk_recording(n_frames: int = 60, seed: int = 0, regional: bool = False) -> np.ndarray:
    """Point electrodes on a homogeneous unit disk (potential of a current dipole on the
    boundary), a breathing-like gain and 0.1 % noise: T x 208; `regional`: each channel
    breathes with its own amplitude (0 to 2 %) and a phase lag of up to 0.4 s, as regions of
    real lungs do."""
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
    if regional:
        lag = rng.uniform(0, 8, volts.size)  # frames (20 per second)
        breathing = 1 + rng.uniform(0, 0.02, volts.size) * np.sin(
            2 * np.pi * (np.arange(n_frames)[:, None] - lag) / 80)
    else:
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


RATE = 20.0  # frames/s of the drift tests: 10 s, as the fault bench's `drift` scenario


def drifting(electrode: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(clean, drifting) 10 s of regional breathing; the drifting copy has `electrode`'s
    contact gain ramping by 5 % (the simulation's fault model, `worker.simulation.faults`)."""
    clean = disk_recording(200, seed, regional=True)
    times = np.arange(200) / RATE
    drift, _ = apply_faults(clean, None, times, PROTOCOL, [ElectrodeFault(electrode, "drift")],
                            np.random.default_rng(seed))
    return clean, drift


@pytest.mark.parametrize("electrode", [6, 13])
def test_a_drifting_electrode_is_flagged_and_only_it(electrode: int) -> None:
    clean, drift = drifting(electrode)
    times = np.arange(200) / RATE
    result = quality_report(drift, PROTOCOL.currents, PROTOCOL.meas_injection,
                            PROTOCOL.meas_weights, frame_times=times)
    assert result.flagged == [electrode] and result.flags[electrode] == ["drift"]
    change = result.drift.change_pct
    assert change[electrode] == pytest.approx(100 * DRIFT, rel=0.15)  # 5 % over the 10 s
    assert np.abs(np.delete(change, electrode)).max() < 0.2
    summary = result.to_dict()
    assert summary["flags"] == {str(electrode + 1): ["drift"]}
    assert summary["drift_seconds"] == pytest.approx(9.95)
    assert "+4." in result.table().splitlines()[3 + electrode]
    # the noise, reciprocity and usable scores do not see it (docs/real-data.md)
    without = quality_report(drift, PROTOCOL.currents, PROTOCOL.meas_injection,
                             PROTOCOL.meas_weights)
    assert without.flagged == [] and without.drift is None
    assert quality_report(clean, PROTOCOL.currents, PROTOCOL.meas_injection,
                          PROTOCOL.meas_weights, frame_times=times).flagged == []


def test_drift_needs_a_persistent_trend_and_enough_seconds() -> None:
    clean, drift = drifting()
    times = np.arange(200) / RATE
    args = (PROTOCOL.currents, PROTOCOL.meas_injection, PROTOCOL.meas_weights)
    # a contact that swells 5 % and recovers within the window is no drift
    bump = clean.copy()
    bump[:, uses(6)] *= (1 + 0.05 * np.sin(np.pi * times / times[-1]))[:, None]
    assert electrode_drift(bump, times, *args).flagged == ()
    # 3 s are too short to judge
    assert electrode_drift(drift[:60], times[:60], *args) is None
    # flagged from about 6 s of frames on
    assert electrode_drift(drift[:120], times[:120], *args).flagged == (6,)


def test_no_drift_on_the_real_slices() -> None:
    """The 40-frame slices are too short (3 s); the child's 260 frames (20 s) flag none."""
    from tests.worker.bench.test_heart_evidence import SLICE

    for path in (NEONATE, CHILD, SLICE):
        device = read_get(path)
        times = np.arange(device.n_frames) / device.frame_rate
        result = quality_report(device.voltages, PROTOCOL.currents, PROTOCOL.meas_injection,
                                PROTOCOL.meas_weights, device.reciprocals_measured,
                                frame_times=times)
        assert not any("drift" in reasons for reasons in result.flags.values()), path
        assert (result.drift is None) == (device.n_frames == 40)
