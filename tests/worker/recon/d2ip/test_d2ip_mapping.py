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
