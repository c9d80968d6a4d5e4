"""Eq. (8), (9), (11): TV values, mask handling, temporal weights and window, output mapping."""

from __future__ import annotations

import math

import pytest
import torch

from worker.recon.d2ip.loss import (
    DataTerm,
    LossConfig,
    MaskGeometry,
    VolumeWindow,
    spatial_tv,
    temporal_tv,
    temporal_weights,
)
from worker.recon.d2ip.mapping import OutputRange, mask_indices, to_volume

EPS = 1e-6


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
    assert geom.n_inside == 2 * 4 * 4


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


def test_data_loss_is_the_mean_squared_residual() -> None:
    jac = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    x, dv = torch.tensor([1.0, 1.0]), torch.tensor([0.0, 0.0, 0.0])
    assert float(DataTerm(jac, rtol=None)(x, dv)) == pytest.approx((1 + 4 + 4) / 3)
    assert float(DataTerm(jac)(x, dv)) == pytest.approx((1 + 4 + 4) / 3)


def test_range_compressed_data_term_is_exact_on_redundant_rows() -> None:
    gen = torch.Generator().manual_seed(0)
    rows = torch.randn(6, 40, generator=gen)
    jac = rows.repeat_interleave(2, dim=0)  # reciprocal pairs: M = 12, rank 6
    term, plain = DataTerm(jac), DataTerm(jac, rtol=None)
    assert term.rank == 6 and plain.rank == 12
    x = torch.randn(40, generator=gen, requires_grad=True)
    dv = torch.randn(12, generator=gen)  # has a part outside J's range
    a, b = term(x, dv), plain(x, dv)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    ga, gb = torch.autograd.grad(a, x)[0], torch.autograd.grad(b, x)[0]
    torch.testing.assert_close(ga, gb, rtol=1e-4, atol=1e-6)


def test_loss_defaults_follow_the_paper() -> None:
    cfg = LossConfig()
    assert (cfg.lam, cfg.lam_s, cfg.lam_t) == (0.002, 1.0, 0.1)


def test_output_range_maps_half_to_zero_and_validates() -> None:
    rng = OutputRange()
    assert float(rng.apply(torch.tensor(0.5))) == 0.0
    assert (rng.lo, rng.hi) == (-1.0, 1.0)
    assert OutputRange.symmetric(0.3) == OutputRange(-0.3, 0.3)
    assert OutputRange.from_preview(0.2) == OutputRange(-0.4, 0.4)
    assert OutputRange.from_preview(5.0) == OutputRange(-1.0, 1.0)
    for lo, hi in [(0.0, 1.0), (-1.0, -0.1), (0.2, 0.1)]:
        with pytest.raises(ValueError):
            OutputRange(lo, hi)


def test_mask_order_is_c_order_and_round_trips() -> None:
    mask = torch.zeros(2, 3, 4, dtype=torch.bool)
    mask[0, 1, 2] = mask[1, 0, 0] = mask[1, 2, 3] = True
    assert mask_indices(mask).tolist() == [6, 12, 23]
    vol = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
    values = vol[mask]
    assert torch.equal(vol.reshape(-1)[mask_indices(mask)], values)
    back = to_volume(values, mask)
    assert torch.equal(back[mask], values) and float(back[~mask].abs().sum()) == 0.0
