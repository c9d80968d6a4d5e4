from __future__ import annotations

import numpy as np
import pytest

from worker.ventilation.lung_mask import functional_mask, lung_region, mirrored

from .conftest import SHAPE


def test_functional_mask_is_the_fraction_of_the_largest_tiv(body) -> None:
    tiv = np.zeros(SHAPE)
    tiv[2, 3, 2] = 1.0
    tiv[2, 3, 3] = 0.15
    tiv[2, 3, 4] = 0.149
    mask = functional_mask(tiv, body, fraction=0.15)
    assert mask.sum() == 2 and mask[2, 3, 2] and mask[2, 3, 3]
    assert not functional_mask(-tiv, body).any()
    with pytest.raises(ValueError):
        functional_mask(tiv, body, fraction=1.5)


def test_mirror_adds_the_silent_lung(body, space) -> None:
    """All ventilation in the right lung (columns 0-3): the mirror adds columns 8-11."""
    tiv = np.zeros(SHAPE)
    tiv[:, 2:8, 0:4] = 1.0
    region = lung_region(tiv, body, space)
    assert region[:, 2:8, 0:4].all() and region[:, 2:8, 8:12].all()
    assert region.sum() == 2 * tiv.sum()
    assert lung_region(tiv, body, space, mirror=False).sum() == tiv.sum()
    assert np.array_equal(mirrored(mirrored(region, space), space), region)
