"""The impedance signals of a volume series, in the clinical sign convention.

Volumes hold the relative conductivity change Δσ/σ0 against the reference frame. Air lowers
conductivity, so EIT monitors show impedance as -Δσ/σ0: it rises on inspiration. Every curve
and image of this package uses that sign.
"""

from __future__ import annotations

import numpy as np

GLOBAL_UNIT = "a.u. (Σ -Δσ/σ0 over the mask's voxels)"
VOXEL_UNIT = "a.u. (-Δσ/σ0)"


def voxel_impedance(volumes: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(T, V) per-voxel impedance change -Δσ/σ0 of the V voxels inside `mask` (C order)."""
    volumes = np.asarray(volumes)
    if volumes.ndim != 4 or volumes.shape[1:] != mask.shape:
        raise ValueError(f"volumes {volumes.shape} do not match the mask {mask.shape}")
    return -volumes[:, mask].astype(np.float64)


def global_impedance(volumes: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(T,) global impedance curve -Σ_{v in mask} Δσ_v/σ0 (unit: `GLOBAL_UNIT`)."""
    return voxel_impedance(volumes, mask).sum(axis=1)


def sample_frequency(frame_times: np.ndarray) -> float:
    """Frames per second from strictly increasing frame times (median interval)."""
    times = np.asarray(frame_times, dtype=np.float64)
    if times.ndim != 1 or times.size < 2:
        raise ValueError("frame_times: need at least two frames")
    step = np.diff(times)
    if np.any(step <= 0):
        raise ValueError("frame_times: not strictly increasing")
    return float(1.0 / np.median(step))
