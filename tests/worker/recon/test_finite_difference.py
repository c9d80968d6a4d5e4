"""The masked difference operator: adjoint, boundary, norm bound, and TV equal to D2IP's eq. (8)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worker.forward.model import ForwardModel
from worker.recon.finite_difference import NORM_SQ_BOUND, MaskedDifference, total_variation


@pytest.fixture(scope="module")
def difference(coarse_model: ForwardModel) -> MaskedDifference:
    return MaskedDifference(coarse_model.mask)


def test_adjoint(difference: MaskedDifference) -> None:
    """<D x, g> = <x, Dᵀ g> for random x and g."""
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        x = torch.randn(difference.n_voxels, generator=gen, dtype=torch.float64)
        g = torch.randn(3, difference.n_voxels, generator=gen, dtype=torch.float64)
        assert float((difference.apply(x) * g).sum()) == pytest.approx(
            float((x * difference.adjoint(g)).sum()), rel=1e-12)


def test_constants_boundary_and_norm_bound(coarse_model: ForwardModel,
                                           difference: MaskedDifference) -> None:
    ones = torch.ones(difference.n_voxels)
    assert torch.all(difference.apply(ones) == 0)  # constants have no variation
    assert total_variation(ones, difference, 1e-4) == pytest.approx(1e-2)
    # a difference along C between two masked neighbours, in volume coordinates
    vol = np.zeros(coarse_model.grid.shape)
    p, r, c = np.argwhere(coarse_model.mask & np.roll(coarse_model.mask, -1, axis=2))[0]
    vol[p, r, c + 1] = 1.0
    d = difference.apply(torch.from_numpy(vol[coarse_model.mask]))
    index = int(np.flatnonzero(coarse_model.mask.ravel() == 1).searchsorted(
        np.ravel_multi_index((p, r, c), vol.shape)))
    assert float(d[2, index]) == 1.0 and float(d[0, index]) == 0.0
    # power iteration: ‖D‖² stays below the bound the TV step sizes rely on
    gen = torch.Generator().manual_seed(1)
    v = torch.randn(difference.n_voxels, generator=gen, dtype=torch.float64)
    for _ in range(200):
        v = difference.adjoint(difference.apply(v))
        v /= v.norm()
    assert float(difference.adjoint(difference.apply(v)).norm()) <= NORM_SQ_BOUND


def test_a_pair_with_one_voxel_outside_the_mask_has_no_difference() -> None:
    mask = np.zeros((2, 2, 3), dtype=bool)
    mask[0, 0, :2] = True  # two voxels along C; their +P and +R neighbours lie outside
    difference = MaskedDifference(mask)
    d = difference.apply(torch.tensor([1.0, 3.0]))
    torch.testing.assert_close(d, torch.tensor([[0.0, 0.0], [0.0, 0.0], [2.0, 0.0]]))
    with pytest.raises(ValueError, match="mask"):
        MaskedDifference(np.zeros((2, 2, 2), dtype=bool))


def test_total_variation_equals_d2ip_spatial_tv() -> None:
    """The shared TV is D2IP's eq. (8) (`d2ip.loss.spatial_tv`) on a random masked volume."""
    from worker.recon.d2ip.loss import MaskGeometry, spatial_tv

    rng = np.random.default_rng(2)
    mask = rng.random((6, 7, 8)) < 0.7
    volume = np.where(mask, rng.standard_normal(mask.shape), 0.0).astype(np.float32)
    difference = MaskedDifference(mask)
    geometry = MaskGeometry.from_mask(torch.from_numpy(mask))
    for eps in (1e-6, 1e-2):
        ours = total_variation(torch.from_numpy(volume[mask]), difference, eps)
        theirs = spatial_tv(torch.from_numpy(volume), geometry, eps)
        assert float(ours) == pytest.approx(float(theirs), rel=1e-5)
