"""The homogeneous-model check: correlation of the measured reference with the model's."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.worker.devices.conftest import CHILD, NEONATE
from worker.devices.consistency import WARN_BELOW, check_protocol, homogeneous_voltages
from worker.devices.goettingen import read_get


def test_verdicts_on_synthetic_voltages() -> None:
    rng = np.random.default_rng(0)
    model = np.abs(rng.standard_normal(40)) + 0.1
    injection = np.repeat(np.arange(4), 10)
    good = check_protocol(3.0 * model * (1 + 0.02 * rng.standard_normal(40)), model, injection)
    assert good.verdict == "ok" and good.overall > 0.99 and len(good.per_injection) == 4
    assert np.allclose(good.channel_ratio, 1.0, atol=0.1)
    flipped = check_protocol(-3.0 * model, model, injection)
    assert flipped.verdict == "refuse" and "sign looks flipped" in flipped.message
    shuffled = check_protocol(rng.permutation(model), model, injection)
    assert shuffled.verdict in ("warn", "refuse") and shuffled.overall < WARN_BELOW
    assert good.to_dict()["verdict"] == "ok"


@pytest.mark.parametrize(("path", "low"), [(NEONATE, 0.9), (CHILD, 0.8)])
def test_real_slices_match_the_model(coarse_ring_model: Any, path: Any, low: float) -> None:
    reference = read_get(path).voltages.mean(axis=0)
    check = check_protocol(reference, coarse_ring_model.reference_voltages,
                           coarse_ring_model.protocol.meas_injection)
    assert check.verdict == "ok" and check.overall > low


def test_our_adjacent_preset_is_the_flipped_sign(coarse_ring_model: Any) -> None:
    """Our `adjacent` preset drives +1 on electrode e: the same 208 channels, the opposite
    sign of what the Goe-MF II reports. The check refuses it."""
    reference = read_get(NEONATE).voltages.mean(axis=0)
    flipped = homogeneous_voltages(coarse_ring_model, "adjacent")
    np.testing.assert_allclose(flipped, -coarse_ring_model.reference_voltages, rtol=1e-6,
                               atol=1e-12)
    check = check_protocol(reference, flipped, coarse_ring_model.protocol.meas_injection)
    assert check.verdict == "refuse" and check.overall < -0.9
    assert homogeneous_voltages(coarse_ring_model) is coarse_ring_model.reference_voltages
