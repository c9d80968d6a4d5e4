"""The Goe-MF II `.get` reader on slices of the two real recordings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.contract.protocol import resolve_protocol
from tests.worker.devices.conftest import CHILD, NEONATE, SLICE_FRAMES
from worker.devices import FORMATS, read_device_file
from worker.devices.goettingen import GetFormatError, read_get
from worker.devices.quality import reciprocal_partners


def raw(path: Path) -> np.ndarray:
    return np.fromfile(path, dtype="<f4").reshape(-1, 256).astype(float)


@pytest.mark.parametrize("path", [NEONATE, CHILD])
def test_reads_frames_in_protocol_order(path: Path) -> None:
    dev = read_device_file(path, "get")
    assert FORMATS["get"] is read_get
    assert dev.voltages.shape == (SLICE_FRAMES, 208) and dev.frame_rate == 13.0
    assert dev.details["sidecar"]["file"].endswith(".prl")
    protocol = resolve_protocol(dev.protocol).build(16)
    assert protocol.n_measurements == 208
    file_values = raw(path)[:, :208]
    for k, (inj, weights) in enumerate(zip(protocol.meas_injection, protocol.meas_weights,
                                           strict=True)):
        plus = int(np.flatnonzero(weights > 0)[0])
        assert (plus - inj - 2) % 16 < 13  # never on a driven electrode
        position = 13 * inj + (plus - inj - 2) % 16  # the file's rotated order
        if file_values[0, position] != 0:
            np.testing.assert_array_equal(dev.voltages[:, k], file_values[:, position])


@pytest.mark.parametrize("path", [NEONATE, CHILD])
def test_values_look_like_adjacent_transfer_impedances(path: Path) -> None:
    """All positive; per injection a U-shaped profile: largest next to the driven pair."""
    dev = read_get(path)
    assert np.all(dev.voltages > 0)
    profile = dev.voltages.mean(axis=0).reshape(16, 13)
    protocol = resolve_protocol(dev.protocol).build(16)
    plus = np.argmax(protocol.meas_weights > 0, axis=1).reshape(16, 13)
    for inj in range(16):
        top = plus[inj, np.argmax(profile[inj])]
        assert top in ((inj + 2) % 16, (inj - 2) % 16)
        assert profile[inj].min() < 0.25 * profile[inj].max()


def test_neonate_measured_both_reciprocals() -> None:
    dev = read_get(NEONATE)
    assert dev.reciprocals_measured and dev.details["stored"] == "208 values"
    protocol = resolve_protocol(dev.protocol).build(16)
    partner = reciprocal_partners(protocol.meas_weights, protocol.currents,
                                  protocol.meas_injection)
    assert np.all(partner >= 0)
    mean = dev.voltages.mean(axis=0)
    error = np.abs(mean - mean[partner]) / mean
    assert np.median(error) < 0.05 and error.max() < 0.25


def test_child_stored_one_of_each_pair() -> None:
    """104 values per frame, the other 104 exactly zero (EIDORS: value 39 is one of them)."""
    values = raw(CHILD)[:, :208]
    assert values[0, 38] == 0 and np.count_nonzero(np.all(values == 0, axis=0)) == 104
    dev = read_get(CHILD)
    assert not dev.reciprocals_measured
    protocol = resolve_protocol(dev.protocol).build(16)
    partner = reciprocal_partners(protocol.meas_weights, protocol.currents,
                                  protocol.meas_injection)
    np.testing.assert_array_equal(dev.voltages, dev.voltages[:, partner])
    assert dev.details["injection_current_A"][13:] == [0.0, 0.0, 0.0]


def test_rejects_other_files(tmp_path: Path) -> None:
    odd = tmp_path / "odd.get"
    odd.write_bytes(NEONATE.read_bytes()[:1000])
    with pytest.raises(GetFormatError, match="whole number"):
        read_get(odd)
    with pytest.raises(ValueError, match="unknown format 'xyz'; known: get, eit, draeger-eit"):
        read_device_file(NEONATE, "xyz")


def test_no_sidecar_no_rate(tmp_path: Path) -> None:
    alone = tmp_path / "alone.get"
    alone.write_bytes(NEONATE.read_bytes())
    assert read_get(alone).frame_rate is None
