"""Simulated electrode faults touch exactly the faulty electrode's channels."""

from __future__ import annotations

import numpy as np
import pytest

from service.contract.protocol import resolve_protocol
from worker.simulation.faults import BROKEN_GAIN, DRIFT, ElectrodeFault, apply_faults


@pytest.fixture
def protocol():
    return resolve_protocol("adjacent").build(16)


def uses(protocol, electrode: int) -> np.ndarray:
    return ((protocol.meas_weights[:, electrode] != 0)
            | (protocol.currents[protocol.meas_injection, electrode] != 0))


def test_broken_electrode_spoils_only_its_channels(protocol) -> None:
    voltages = np.ones((50, protocol.n_measurements))
    times = np.arange(50) / 20.0
    faulty, reference = apply_faults(voltages, voltages[0], times, protocol,
                                     [ElectrodeFault(2)], np.random.default_rng(0))
    hit = uses(protocol, 2)
    assert 0 < hit.sum() < protocol.n_measurements
    np.testing.assert_array_equal(faulty[:, ~hit], 1.0)
    np.testing.assert_array_equal(reference[~hit], 1.0)
    assert faulty[:, hit].mean() == pytest.approx(BROKEN_GAIN, abs=0.01)
    assert faulty[:, hit].std() == pytest.approx(0.1, rel=0.1)


def test_drifting_contact_ramps_its_channels(protocol) -> None:
    voltages = np.ones((11, protocol.n_measurements))
    times = np.linspace(0.0, 10.0, 11)
    faulty, reference = apply_faults(voltages, None, times, protocol,
                                     [ElectrodeFault(5, "drift")], np.random.default_rng(0))
    hit = uses(protocol, 5)
    assert reference is None
    np.testing.assert_allclose(faulty[:, hit], (1 + DRIFT * times / 10.0)[:, None] * np.ones(
        (1, hit.sum())))
    np.testing.assert_array_equal(faulty[:, ~hit], 1.0)


def test_unknown_kind_and_electrode_are_refused(protocol) -> None:
    with pytest.raises(ValueError, match="kind"):
        ElectrodeFault(1, "loose")
    with pytest.raises(ValueError, match="not on the belt"):
        apply_faults(np.ones((3, protocol.n_measurements)), None, np.arange(3.0), protocol,
                     [ElectrodeFault(16)], np.random.default_rng(0))
