"""Where the voxels of a (P, R, C) volume lie in patient space (DICOM LPS, metres).

Axis order is the project's (P, R, C): planes bottom-to-top (+z, caudal -> cranial), rows
anterior-to-posterior (+y), columns patient-right-to-left (+x). The forward model's grid spans
the domain's bounding box, x in [-W/2, W/2], y in [-D/2, D/2], z in [0, H]
(`service.contract.grid.voxel_edges`); `VoxelSpace.from_extent` builds the same layout from those
three numbers, so this package never imports the forward model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class VoxelSpace:
    """Voxel size and position: `spacing` (dz, dy, dx) in metres and `origin` (z, y, x), the
    centre of voxel (0, 0, 0) in patient coordinates (LPS, metres)."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]

    def __post_init__(self) -> None:
        if len(self.shape) != 3 or len(self.spacing) != 3 or len(self.origin) != 3:
            raise ValueError("VoxelSpace: shape, spacing and origin need three entries (P, R, C)")
        if any(s <= 0 for s in self.spacing):
            raise ValueError(f"VoxelSpace: spacing must be positive, got {self.spacing}")

    @classmethod
    def from_extent(cls, shape: tuple[int, int, int], width: float, depth: float,
                    height: float) -> VoxelSpace:
        """The forward model's grid: x in [-W/2, W/2], y in [-D/2, D/2], z in [0, H] (m)."""
        planes, rows, cols = shape
        spacing = (height / planes, depth / rows, width / cols)
        origin = (spacing[0] / 2, -depth / 2 + spacing[1] / 2, -width / 2 + spacing[2] / 2)
        return cls(tuple(int(n) for n in shape), spacing, origin)

    @classmethod
    def unit(cls, shape: tuple[int, int, int]) -> VoxelSpace:
        """Voxels of 1 m centred on the x/y midline, z from 0 (when no geometry is known)."""
        return cls.from_extent(shape, float(shape[2]), float(shape[1]), float(shape[0]))

    def centres(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """z (P,), y (R,) and x (C,) of the voxel centres, metres."""
        return tuple(o + s * np.arange(n) for o, s, n in
                     zip(self.origin, self.spacing, self.shape, strict=True))

    def plane_of(self, z: float) -> int:
        """Index of the plane whose slab holds height z (clipped to the grid)."""
        k = int(np.floor((z - self.origin[0]) / self.spacing[0] + 0.5))
        return int(np.clip(k, 0, self.shape[0] - 1))

    @property
    def voxel_volume_ml(self) -> float:
        return float(np.prod(self.spacing)) * 1e6


def geometry_space(geometry: Any, shape: tuple[int, int, int]
                   ) -> tuple[VoxelSpace, tuple[float, ...]]:
    """The voxel space of a (P, R, C) grid over a geometry spec's domain, and its electrode
    rings' heights (m). `geometry` is any object with `domain.width`, `domain.depth`,
    `domain.height` and `electrodes.ring_heights` (a resolved `GeometrySpec`)."""
    dom = geometry.domain
    return (VoxelSpace.from_extent(shape, dom.width, dom.depth, dom.height),
            tuple(float(z) for z in geometry.electrodes.ring_heights))
