"""Eq. (11)-(13): TV values, mask handling, temporal weights and window, the 4D-TV prior."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from worker.recon.d2ip.prior import (
    TV4D,
    MaskGeometry,
    VolumeWindow,
    temporal_tv,
    temporal_weights,
)
from worker.recon.finite_difference import total_variation

EPS = 1e-6


def spatial_tv(volume: Tensor, geom: MaskGeometry, eps: float) -> Tensor:
    """R_spatial (12) of a (P, R, C) volume: the shared TV of its voxels inside the mask."""
    return total_variation(volume.reshape(-1)[geom.index], geom.difference, eps)


def test_spatial_tv_of_a_constant_is_sqrt_eps() -> None:
    geom = MaskGeometry.from_mask(torch.ones(4, 6, 8, dtype=torch.bool))
    tv = spatial_tv(torch.full((4, 6, 8), 0.3), geom, EPS)
    assert float(tv) == pytest.approx(math.sqrt(EPS), rel=1e-5)


def test_spatial_tv_of_a_step() -> None:
    geom = MaskGeometry.from_mask(torch.ones(4, 6, 8, dtype=torch.bool))
    vol = torch.zeros(4, 6, 8)
    vol[:, :, 4:] = 0.5  # one jump of 0.5 along C, at c = 3 -> 4, on 4 x 6 voxels
    expected = (24 * math.sqrt(0.25 + EPS) + (192 - 24) * math.sqrt(EPS)) / 192
    assert float(spatial_tv(vol, geom, EPS)) == pytest.approx(expected, rel=1e-5)


def test_spatial_tv_ignores_differences_that_leave_the_mask() -> None:
    mask = torch.zeros(4, 6, 8, dtype=torch.bool)
    mask[1:3, 1:5, 2:6] = True
    geom = MaskGeometry.from_mask(mask)
    vol = torch.where(mask, torch.tensor(0.2), torch.tensor(-0.9))  # jumps only across the edge
    assert float(spatial_tv(vol, geom, EPS)) == pytest.approx(math.sqrt(EPS), rel=1e-5)
    assert geom.n_inside == 2 * 4 * 4 and geom.shape == (4, 6, 8)


def test_temporal_weights_decay_and_normalise() -> None:
    assert torch.equal(temporal_weights(0, 10), torch.zeros(10))
    assert temporal_weights(1, 10).tolist() == [0.0] * 9 + [1.0]
    w = temporal_weights(3, 10)
    assert float(w.sum()) == pytest.approx(1.0)
    assert w[:7].abs().sum() == 0
    assert float(w[9] / w[8]) == pytest.approx(math.e, rel=1e-5)  # lag 1 vs lag 2
    full = temporal_weights(25, 10)
    assert bool((full > 0).all()) and float(full[0] / full[-1]) == pytest.approx(math.exp(-9))


def test_window_keeps_the_newest_frames_and_round_trips() -> None:
    win = VolumeWindow(n_values=3, window=4)
    for k in range(6):
        win.push(torch.full((3,), float(k)))
    assert win.count == 4
    assert win.frames[:, 0].tolist() == [2.0, 3.0, 4.0, 5.0]
    other = VolumeWindow(n_values=3, window=4)
    other.load_state_dict(win.state_dict())
    assert torch.equal(other.frames, win.frames) and other.count == 4


def test_temporal_tv_value() -> None:
    prev = torch.stack([torch.full((5,), 0.1), torch.full((5,), 0.4)])
    w = temporal_weights(2, 2)
    x = torch.full((5,), 0.4)
    expected = float(w[0]) * math.sqrt(0.09 + EPS) + float(w[1]) * math.sqrt(EPS)
    assert float(temporal_tv(x, prev, w, EPS)) == pytest.approx(expected, rel=1e-5)
    assert float(temporal_tv(x, prev, torch.zeros(2), EPS)) == 0.0


def test_tv4d_weighs_the_spatial_and_temporal_terms() -> None:
    geom = MaskGeometry.from_mask(torch.ones(3, 4, 5, dtype=torch.bool))
    volume = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(1))
    values = volume.reshape(-1)
    previous, weights = torch.zeros(2, 60), temporal_weights(1, 2)
    prior = TV4D(geom, lam_s=1.0, lam_t=0.1, eps=EPS)
    expected = (spatial_tv(volume, geom, EPS)
                + 0.1 * temporal_tv(values, previous, weights, EPS))
    torch.testing.assert_close(prior(volume, values, previous, weights), expected)
