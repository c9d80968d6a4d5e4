"""The masked difference operator: adjoint, boundary, norm bound, and TV (D2IP's eq. 12) in
both forms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worker.forward.model import ForwardModel
from worker.recon.finite_difference import (
    NORM_SQ_BOUND,
    MaskedDifference,
    VolumeDifference,
    total_variation,
    volume_total_variation,
)


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


def test_total_variation_is_d2ip_eq12_on_the_volume() -> None:
    """The shared TV is D2IP's R_spatial, eq. (12), written on the (P, R, C) volume: forward
    differences counted where both voxels lie inside, mean over the voxels inside."""
    rng = np.random.default_rng(2)
    mask = rng.random((6, 7, 8)) < 0.7
    volume = np.where(mask, rng.standard_normal(mask.shape), 0.0)
    squares = np.zeros(mask.shape)
    for axis in range(3):
        ahead = [slice(None)] * 3
        behind = [slice(None)] * 3
        ahead[axis], behind[axis] = slice(1, None), slice(None, -1)
        both = mask[tuple(ahead)] & mask[tuple(behind)]
        step = np.where(both, volume[tuple(ahead)] - volume[tuple(behind)], 0.0)
        squares[tuple(behind)] += step**2
    difference = MaskedDifference(mask)
    grid = VolumeDifference.from_difference(difference)
    for eps in (1e-6, 1e-2):
        ours = total_variation(torch.from_numpy(volume[mask]), difference, eps)
        expected = np.sqrt(squares + eps)[mask].mean()
        assert float(ours) == pytest.approx(expected, rel=1e-12)
        on_volume = volume_total_variation(torch.from_numpy(volume).float(), grid, eps)
        assert float(on_volume) == pytest.approx(expected, rel=1e-5)


def test_volume_form_reads_its_masks_off_the_difference_operator() -> None:
    """`VolumeDifference` marks exactly the voxels where a forward difference stays inside, and
    both TV forms have the same gradient."""
    rng = np.random.default_rng(3)
    mask = rng.random((5, 6, 7)) < 0.6
    difference = MaskedDifference(mask)
    grid = VolumeDifference.from_difference(difference)
    inside = torch.from_numpy(mask)
    torch.testing.assert_close(grid.inside, inside.float())
    torch.testing.assert_close(grid.pair_p, (inside[1:] & inside[:-1]).float())
    torch.testing.assert_close(grid.pair_r, (inside[:, 1:] & inside[:, :-1]).float())
    torch.testing.assert_close(grid.pair_c, (inside[:, :, 1:] & inside[:, :, :-1]).float())
    volume = torch.from_numpy(np.where(mask, rng.standard_normal(mask.shape), 0.0)).float()
    volume.requires_grad_()
    (on_volume,) = torch.autograd.grad(volume_total_variation(volume, grid, 1e-4), volume)
    (on_values,) = torch.autograd.grad(
        total_variation(volume.reshape(-1)[difference.voxels], difference, 1e-4), volume)
    torch.testing.assert_close(on_volume, on_values, rtol=1e-5, atol=1e-8)
