from __future__ import annotations

import numpy as np
import pytest

from worker.ventilation.signal import global_impedance, sample_frequency, voxel_impedance


def test_impedance_rises_when_conductivity_falls() -> None:
    mask = np.zeros((2, 3, 4), dtype=bool)
    mask[:, 1, :] = True
    volumes = np.zeros((3, 2, 3, 4))
    volumes[1] = -0.1  # inspiration: air lowers conductivity
    volumes[2, 0, 0, 0] = 5.0  # outside the mask: ignored
    assert np.allclose(global_impedance(volumes, mask), [0.0, 0.8, 0.0])
    assert voxel_impedance(volumes, mask).shape == (3, 8)


def test_sample_frequency_and_bad_times() -> None:
    assert sample_frequency(np.arange(10) / 20.0) == pytest.approx(20.0)
    with pytest.raises(ValueError, match="increasing"):
        sample_frequency(np.array([0.0, 0.1, 0.1]))
