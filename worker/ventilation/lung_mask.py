"""The lung region: a functional mask from the data, completed by its mirror image.

Functional part (eitprocessing's `TIVLungspace`, v1.8): the voxels whose mean tidal impedance
variation over the detected breaths is at least `fraction` (default 15 %) of the largest one.
A lung that does not ventilate (atelectasis, effusion, a clamped bronchus) has no functional
voxels, so its silent spaces would be invisible. `mirror=True` (the default) adds the mirror
image of the functional part across the patient's midline (x = 0), inside the body, as the lung
area estimation behind the global inhomogeneity index does (Zhao et al., Intensive Care Med
2009; TREND, Frerichs et al., Thorax 2017, "lung area estimation").
"""

from __future__ import annotations

import numpy as np

from worker.ventilation.space import VoxelSpace

LUNG_FRACTION = 0.15


def functional_mask(tiv_image: np.ndarray, body_mask: np.ndarray,
                    fraction: float = LUNG_FRACTION) -> np.ndarray:
    """(P, R, C) bool: body voxels with TIV >= fraction x the body's maximum TIV."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction: expected 0 < fraction < 1, got {fraction}")
    peak = float(np.max(tiv_image[body_mask], initial=0.0))
    if peak <= 0:
        return np.zeros(body_mask.shape, dtype=bool)
    return body_mask & (tiv_image >= fraction * peak)


def mirrored(mask: np.ndarray, space: VoxelSpace) -> np.ndarray:
    """`mask` reflected across x = 0 (columns mapped by their centres' x, nearest column)."""
    _, _, x = space.centres()
    source = np.rint((-x - space.origin[2]) / space.spacing[2]).astype(int)
    inside = (source >= 0) & (source < mask.shape[2])
    out = np.zeros_like(mask)
    out[:, :, inside] = mask[:, :, source[inside]]
    return out


def lung_region(tiv_image: np.ndarray, body_mask: np.ndarray, space: VoxelSpace,
                fraction: float = LUNG_FRACTION, mirror: bool = True) -> np.ndarray:
    """The functional mask, joined with its mirror image inside the body when `mirror`."""
    functional = functional_mask(tiv_image, body_mask, fraction)
    if not mirror:
        return functional
    return functional | (mirrored(functional, space) & body_mask)
