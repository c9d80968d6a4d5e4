"""The forward model linearised at a large change (`worker.forward.linearisation`)."""

from __future__ import annotations

import numpy as np
import pytest

from worker.forward.linearisation import U_BOUNDS, linearise, relinearise
from worker.forward.model import ForwardModel


def test_at_zero_it_is_the_model(coarse_model: ForwardModel) -> None:
    lin = linearise(coarse_model, np.zeros(coarse_model.n_voxels))
    assert np.abs(lin.change).max() < 1e-9
    np.testing.assert_allclose(lin.jacobian, coarse_model.jacobian, rtol=1e-9,
                               atol=1e-12 * np.abs(coarse_model.jacobian).max())


def test_the_jacobian_is_the_derivative_at_a_large_change(
        coarse_model: ForwardModel, insulator: tuple[np.ndarray, np.ndarray]) -> None:
    u = insulator[0]
    direction = np.random.default_rng(0).normal(size=coarse_model.n_voxels) * (u != 0)
    h = 1e-3
    lin = linearise(coarse_model, u)
    central = (linearise(coarse_model, u + h * direction).change
               - linearise(coarse_model, u - h * direction).change) / (2 * h)
    predicted = lin.jacobian @ direction
    assert np.linalg.norm(predicted - central) < 1e-4 * np.linalg.norm(central)
    # ... and it differs from the background's inside the insulator: far from linear
    moved = coarse_model.jacobian @ direction
    assert np.linalg.norm(moved - central) > 0.05 * np.linalg.norm(central)


def test_the_relinearised_data_term(coarse_model: ForwardModel,
                                    insulator: tuple[np.ndarray, np.ndarray]) -> None:
    truth, dv = insulator
    at_truth = relinearise(coarse_model, dv, truth)
    assert at_truth.misfit < 1e-20
    np.testing.assert_allclose(at_truth.operator.apply(truth),
                               at_truth.operator.whiten(at_truth.data), rtol=1e-9)
    at_zero = relinearise(coarse_model, dv, np.zeros_like(truth))
    weights = coarse_model.operator.weights
    assert at_zero.misfit == pytest.approx(float(np.mean((weights * dv) ** 2)))
    np.testing.assert_allclose(at_zero.data, dv, atol=1e-9)


def test_u_is_bounded(coarse_model: ForwardModel) -> None:
    far = linearise(coarse_model, np.full(coarse_model.n_voxels, -50.0))
    edge = linearise(coarse_model, np.full(coarse_model.n_voxels, U_BOUNDS[0]))
    np.testing.assert_array_equal(far.change, edge.change)
    with pytest.raises(ValueError, match="u: expected shape"):
        linearise(coarse_model, np.zeros(3))
