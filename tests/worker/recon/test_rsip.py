"""R-SIP: determinism under a seed, exact checkpoints, warm and cold starts, quality."""

from __future__ import annotations

import numpy as np

from worker.forward.model import ForwardModel
from worker.recon.rsip import RSIP

FAST = {"first_iterations": 30, "iterations": 10}


def test_deterministic_under_a_seed(coarse_model: ForwardModel, healthy_dv: np.ndarray) -> None:
    a = RSIP(coarse_model, seed=3, **FAST).push(healthy_dv[1]).volume
    b = RSIP(coarse_model, seed=3, **FAST).push(healthy_dv[1]).volume
    c = RSIP(coarse_model, seed=4, **FAST).push(healthy_dv[1]).volume
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_state_round_trip_continues_exactly(coarse_model: ForwardModel, frames3: np.ndarray,
                                            continues) -> None:
    continues(lambda: RSIP(coarse_model, **FAST), frames3, atol=0.0)
    state = RSIP(coarse_model, seed=5, **FAST).state_dict()
    restored = RSIP(coarse_model, seed=0, **FAST)
    restored.load_state_dict(state)
    assert restored.seed == 5 and restored.settings["seed"] == 5


def test_warm_and_cold_starts(coarse_model: ForwardModel, healthy_dv: np.ndarray) -> None:
    warm = RSIP(coarse_model, **FAST)
    assert [warm.push(f).iterations for f in healthy_dv] == [30, 10]
    cold = RSIP(coarse_model, warm_start=False, **FAST)
    results = [cold.push(f) for f in (healthy_dv[1], healthy_dv[1])]
    assert [r.iterations for r in results] == [30, 30]
    np.testing.assert_array_equal(results[0].volume, results[1].volume)  # re-initialised


def test_quality_on_healthy_deep_breath(coarse_model: ForwardModel, healthy, cc_of) -> None:
    # Measured with the defaults (1000 + 200 Adam iterations, about 5 s on an idle core):
    # CC 0.84 on these two frames (coarse, 50 dB); threshold as for Tikhonov and TV, 0.7.
    assert cc_of(RSIP(coarse_model), healthy) > 0.7
