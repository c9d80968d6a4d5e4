"""The pretraining set: seeded, previews of the truths, evaluation cases kept out."""

from __future__ import annotations

import numpy as np

from worker.recon.educated.data import (
    DataConfig,
    build_dataset,
    evaluation_truths,
    nearest_distance,
    perturbed_geometry,
)
from worker.recon.tikhonov import tikhonov_operator

CONFIG = DataConfig(samples=8, fem_samples=0)


def test_dataset_is_seeded_and_holds_previews_of_its_truths(coarse_model) -> None:
    a = build_dataset(coarse_model, CONFIG)
    b = build_dataset(coarse_model, CONFIG)
    np.testing.assert_array_equal(a.inputs, b.inputs)
    np.testing.assert_array_equal(a.targets, b.targets)
    c = build_dataset(coarse_model, DataConfig(samples=8, fem_samples=0, seed=1))
    assert not np.array_equal(a.targets, c.targets)
    assert a.inputs.shape == a.targets.shape == (8, coarse_model.n_voxels)
    assert not a.nonlinear.any()
    # the input is R (J x + noise): at 90 dB, R J x, the preview of the truth
    quiet = build_dataset(coarse_model, DataConfig(samples=8, fem_samples=0, snr_db=(90, 90)))
    r = tikhonov_operator(coarse_model).matrix
    clean = (r @ (coarse_model.jacobian.astype(np.float32) @ quiet.targets.T)).T
    for x, y in zip(quiet.inputs, clean, strict=True):
        assert np.corrcoef(x, y)[0, 1] > 0.999


def test_evaluation_frames_are_kept_out(coarse_model) -> None:
    evaluation = evaluation_truths(coarse_model)
    assert len(evaluation) == 20 + 19 + 15  # deep breath, edema (vs frame 1), tidal states
    assert nearest_distance(evaluation[7], evaluation) == 0.0  # a case frame would be redrawn
    data = build_dataset(coarse_model, CONFIG)
    assert all(nearest_distance(t, evaluation) >= CONFIG.exclusion for t in data.targets)
    strict = build_dataset(coarse_model, DataConfig(samples=8, fem_samples=0, exclusion=0.9))
    assert strict.meta["redrawn"] > data.meta["redrawn"]


def test_perturbed_geometries_stay_within_the_tolerance(coarse_model) -> None:
    g0 = coarse_model.geometry
    for seed in range(20):
        g = perturbed_geometry(g0, CONFIG, np.random.default_rng(seed))
        shift = np.subtract(g.electrodes.ring_heights, g0.electrodes.ring_heights)
        assert np.all(np.abs(shift) <= CONFIG.belt_shift + CONFIG.ring_jitter + 1e-12)
        assert abs(g.domain.width / g0.domain.width - 1) <= CONFIG.thorax_scale
        assert g.mesh_size != g0.mesh_size
