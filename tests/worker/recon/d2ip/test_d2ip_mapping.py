"""Eq. (3): the output mapping gamma and the mask order."""

from __future__ import annotations

import pytest
import torch

from worker.recon.d2ip.mapping import OutputRange, mask_indices, to_volume


def test_output_range_maps_half_to_zero_and_validates() -> None:
    rng = OutputRange()
    assert float(rng.apply(torch.tensor(0.5))) == 0.0
    assert (rng.lo, rng.hi) == (-1.0, 1.0)
    assert OutputRange.symmetric(0.3) == OutputRange(-0.3, 0.3)
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


def test_data_range_follows_the_frames_linear_image(coarse_model) -> None:
    import numpy as np

    from worker.recon.d2ip.mapping import DataRange
    from worker.recon.tikhonov import tikhonov_operator

    dv = np.random.default_rng(0).normal(size=coarse_model.n_measurements).astype(np.float32)
    peak = float(np.abs(tikhonov_operator(coarse_model).matrix @ dv).max())
    frame_range = DataRange(margin=2.0).bind(coarse_model)
    assert frame_range(dv).hi == pytest.approx(2.0 * peak, rel=1e-5)
    assert frame_range(3.0 * dv).hi == pytest.approx(6.0 * peak, rel=1e-5)  # scales with data
    assert frame_range(dv).lo == -frame_range(dv).hi
    assert frame_range(0.0 * dv) == OutputRange.symmetric(DataRange.floor)  # still valid
    with pytest.raises(ValueError):
        DataRange(margin=0.0)
