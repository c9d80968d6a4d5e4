"""The voxel Jacobian against finite differences, the cache, the spec round trip."""

from __future__ import annotations

import numpy as np
import pytest

from worker.forward import load_model
from worker.forward.model import ForwardModel

SMALL_THORAX = {"preset": "thorax-2x16", "mesh_size": 0.016}
SMALL_GRID = (8, 16, 16)


def _column(model: ForwardModel, voxel: tuple[int, int, int]) -> int:
    index = -np.ones(model.mask.size, dtype=int)
    index[np.flatnonzero(model.mask)] = np.arange(model.n_voxels)
    return int(index[np.ravel_multi_index(voxel, model.grid.shape)])


def _near_electrode_voxel(model: ForwardModel) -> tuple[int, int, int]:
    """The masked voxel nearest to the first electrode's centre (lower ring, front right)."""
    from worker.forward.mesh import Outline, electrode_centres

    c = electrode_centres(model.geometry, Outline(model.geometry))[0]
    dom = model.geometry.domain
    P, R, C = model.grid.shape
    p = int(c[2] / dom.height * P)
    r = int((c[1] + dom.depth / 2) / dom.depth * R)
    col = int((c[0] + dom.width / 2) / dom.width * C)
    cand = np.argwhere(model.mask[p])
    best = cand[np.argmin(np.hypot(cand[:, 0] - r, cand[:, 1] - col))]
    return (p, int(best[0]), int(best[1]))


def test_jacobian_matches_finite_differences(coarse_model: ForwardModel) -> None:
    m = coarse_model
    P, R, C = m.grid.shape
    voxels = [(P // 2, R // 2, C // 2), (P // 3, R // 2, C // 4), _near_electrode_voxel(m)]
    s0 = np.full(m.grid.shape, m.geometry.background_conductivity)
    v0 = m.reference_voltages
    delta = 1e-4
    for vox in voxels:
        assert m.mask[vox]
        up, down = s0.copy(), s0.copy()
        up[vox] *= 1 + delta
        down[vox] *= 1 - delta
        fd = (m.solve(up) - m.solve(down)) / np.abs(v0) / (2 * delta)
        j = m.jacobian[:, _column(m, vox)]
        assert np.linalg.norm(fd - j) / np.linalg.norm(j) < 1e-2


def test_jacobian_sign_and_normalisation(coarse_model: ForwardModel) -> None:
    """J·(δ 1) predicts the normalised change of a uniform relative increase δ to first order.
    Without contact impedance voltages would scale by 1/(1+δ), so the change is close to
    -δ·sign(v0): a conductivity increase lowers every transfer impedance's magnitude (the
    electrodes' shunting makes a few small-|v0| channels deviate by up to ~15 %)."""
    m = coarse_model
    pred = m.jacobian.sum(axis=1) * 1e-3
    exact = (m.solve(np.full(m.grid.shape, 0.24 * 1.001)) - m.reference_voltages)
    exact /= np.abs(m.reference_voltages)
    assert np.allclose(pred, exact, atol=2e-6)
    ratio = pred / (-1e-3 * np.sign(m.reference_voltages))
    assert ratio.min() > 0.75 and abs(np.median(ratio) - 1) < 0.01


def test_reference_voltages_match_solve(coarse_model: ForwardModel) -> None:
    m = coarse_model
    v = m.solve(np.full(m.grid.shape, m.geometry.background_conductivity))
    assert np.allclose(v, m.reference_voltages, rtol=1e-10)
    assert m.reference_voltages.shape == (m.n_measurements,) == (928,)


def test_mask_orientation_and_projection(coarse_model: ForwardModel) -> None:
    m = coarse_model
    assert m.mask.shape == SMALL_GRID
    assert np.array_equal(m.mask, m.mask[:, :, ::-1])  # left-right symmetric thorax
    assert not m.mask[:, 0, 0].any()  # the front-right corner is outside the body
    assert np.allclose(np.asarray(m.projection.sum(axis=1)).ravel(), 1.0)


def test_cache_hit_and_spec_round_trip(coarse_model: ForwardModel) -> None:
    again = load_model(**coarse_model.spec)
    assert again.from_cache and again.cache_path == coarse_model.cache_path
    assert np.array_equal(again.jacobian, coarse_model.jacobian)
    other = load_model(geometry=SMALL_THORAX, grid=SMALL_GRID, protocol="adjacent")
    assert other.cache_path != coarse_model.cache_path


def test_solve_rejects_bad_conductivity(coarse_model: ForwardModel) -> None:
    with pytest.raises(ValueError, match="shape"):
        coarse_model.solve(np.ones((2, 2, 2)))
    bad = np.full(coarse_model.grid.shape, 0.24)
    bad[coarse_model.mask] = -1
    with pytest.raises(ValueError, match="positive"):
        coarse_model.solve(bad)
