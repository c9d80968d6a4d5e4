"""Synthetic signals and volumes whose ventilation is known."""

from __future__ import annotations

import numpy as np
import pytest

from worker.ventilation.space import VoxelSpace

RATE = 20.0
CARDIAC_HZ = 1.2


def breathing(seed: int, duration: float = 120.0, cardiac: float = 0.08, noise: float = 0.02,
              drift: float = 0.3, spikes: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(times, global curve, lung state u) of tidal breathing: breaths of 4.4 ± 0.4 s and depth
    1 ± 0.15 (u = depth (1 - cos 2πφ)/2), a linear EELI drift, a cardiac sine at 1.2 Hz, white
    noise, and `spikes` samples 10 units high."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(duration * RATE)) / RATE
    u = np.zeros_like(t)
    start = rng.uniform(0.0, 3.0)
    while start < t[-1]:
        period = float(np.clip(rng.normal(4.4, 0.4), 3.4, 5.4))
        depth = float(np.clip(rng.normal(1.0, 0.15), 0.6, 1.4))
        inside = (t >= start) & (t < start + period)
        u[inside] = depth * 0.5 * (1 - np.cos(2 * np.pi * (t[inside] - start) / period))
        start += period
    phase = rng.uniform(0, 6)
    y = (u + drift * t / duration + cardiac * np.sin(2 * np.pi * CARDIAC_HZ * t + phase)
         + noise * rng.standard_normal(t.size))
    y[rng.choice(t.size, spikes, replace=False)] += 10.0
    return t, y, u


SHAPE = (6, 10, 12)  # P, R, C


@pytest.fixture
def space() -> VoxelSpace:
    """6 planes of 2 cm, 10 rows of 2 cm, 12 columns of 2.5 cm, centred on x = y = 0."""
    return VoxelSpace.from_extent(SHAPE, width=0.30, depth=0.20, height=0.12)


@pytest.fixture
def body() -> np.ndarray:
    return np.ones(SHAPE, dtype=bool)
