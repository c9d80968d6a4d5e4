"""GREIT in 3D: the trained matrix, its noise figure, its cache, exclusion and streaming."""

from __future__ import annotations

import numpy as np
import pytest

from worker.forward.model import ForwardModel
from worker.recon import greit
from worker.recon.base import available_methods, create
from worker.recon.greit import Greit, greit_operator, training_set
from worker.recon.weighting import DataWeighting, weighted_model

SMALL = {"n_targets": 300}


def test_registered_as_a_method() -> None:
    assert "greit" in available_methods()


def test_training_targets_and_desired_images(coarse_model: ForwardModel) -> None:
    targets, desired = training_set(coarse_model, 50, greit.TARGET_SIZE, greit.BLUR, seed=0)
    assert targets.shape == desired.shape == (coarse_model.n_voxels, 50)
    counts = np.asarray(targets.sum(axis=0)).ravel()
    assert counts.min() >= 1
    np.testing.assert_allclose(desired.sum(axis=0), counts)  # blurred, same total contrast
    peak_in_target = targets.toarray()[desired.argmax(axis=0), np.arange(50)] > 0
    assert peak_in_target.mean() >= 0.9


def test_noise_figure_is_met_and_the_matrix_is_cached(coarse_model: ForwardModel,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    first = greit_operator(coarse_model, **SMALL)
    assert first.noise_figure <= greit.NOISE_FIGURE
    assert first.noise_figure >= 0.5 * greit.NOISE_FIGURE  # the grid is fine enough
    monkeypatch.setattr(greit, "training_set", lambda *a, **k: pytest.fail("rebuilt"))
    again = greit_operator(coarse_model, **SMALL)
    np.testing.assert_array_equal(again.matrix, first.matrix)


def test_peak_of_a_small_inclusion_is_near_it(coarse_model: ForwardModel) -> None:
    s0 = coarse_model.geometry.background_conductivity
    v0 = coarse_model.solve(np.full(coarse_model.grid.shape, s0))
    idx = np.indices(coarse_model.grid.shape)
    centre = (4, 5, 11)
    ball = np.sqrt(sum((i - c) ** 2 for i, c in zip(idx, centre, strict=True))) <= 1.5
    v = coarse_model.solve(s0 * (1 - 0.3 * (ball & coarse_model.mask)))
    volume = Greit(coarse_model, **SMALL).push((v - v0) / np.abs(v0)).volume
    peak = np.unravel_index(np.argmin(volume), volume.shape)
    assert np.linalg.norm(np.subtract(peak, centre)) <= 2.5, peak


def test_batch_equals_single_frames_and_checkpoints_continue(coarse_model: ForwardModel,
                                                             healthy_dv: np.ndarray,
                                                             frames3: np.ndarray,
                                                             continues) -> None:
    method = Greit(coarse_model, **SMALL)
    batch = [r.volume for r in method.push_many(healthy_dv)]
    single = [Greit(coarse_model, **SMALL).push(dv).volume for dv in healthy_dv]
    for a, b in zip(batch, single, strict=True):  # single frames: the fused product (linear.py)
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * np.abs(b).max())
    assert method.settings["n_targets"] == 300 and method.settings["lam"] > 0
    continues(lambda: create("greit", coarse_model, **SMALL), frames3)


def test_excluded_channels_do_not_reach_the_image(coarse_model: ForwardModel) -> None:
    variant = weighted_model(coarse_model, DataWeighting(exclude=(5,)))
    operator = greit_operator(variant, **SMALL)
    dropped = variant.operator.weights == 0
    assert dropped.any()
    assert np.all(operator.matrix[:, dropped] == 0)
    assert np.abs(operator.matrix[:, ~dropped]).max() > 0
