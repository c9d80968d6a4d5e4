"""2D slices of the INR's volume for the 2D diffusion prior (issue 18: a 2D prior on sections).

Each iteration samples `count` axial planes at heights drawn uniformly between the lowest and
the highest voxel-plane centre, evaluates the INR on a size x size pixel grid over the domain's
bounding square (the positional encodings γ(p) of eq. 14, "every pixel in the grid"), and zeroes
the pixels outside the outline: in a difference image the outside is the background Δσ = 0, so
the domain's boundary is no edge for the prior to see. `orientations` may add coronal (x-z) and
sagittal (y-z) planes at random positions.

Every plane's pixel grid is shifted by its own random offset, uniform within one pixel along
each image axis. The INR is continuous and the data term reads it at the voxel centres, which
need not lie on a fixed pixel lattice (the thorax's 32 voxel rows span its depth, 0.67 of the
bounding square: three voxel rows to two pixel rows). On a fixed lattice the fit grew spikes of
Δσ/σ0 down to -12 exactly halfway between the pixel rows, where the prior never looks
(docs/diff-inr.md, "Thorax"); with the shift every point of the plane is seen in expectation.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from matplotlib.path import Path as PolyPath
from torch import Tensor

from service.contract.geometry import GeometrySpec
from service.contract.grid import GridSpec, voxel_edges
from worker.recon.diffinr.inr import DomainFrame

Orientation = Literal["axial", "coronal", "sagittal"]


def plane_range(geometry: GeometrySpec, grid: GridSpec) -> tuple[float, float]:
    """Normalised z of the lowest and the highest voxel-plane centre."""
    dom = geometry.domain
    edges = voxel_edges(grid, dom.width, dom.depth, dom.height)[0]
    frame = DomainFrame.of(geometry)
    low, high = 0.5 * (edges[0] + edges[1]), 0.5 * (edges[-2] + edges[-1])
    return ((low - frame.centre[2]) / frame.scale, (high - frame.centre[2]) / frame.scale)


class SliceSampler:
    """Random planes of the normalised domain as (B, size², 3) coordinates, and their masks."""

    def __init__(self, geometry: GeometrySpec, z_range: tuple[float, float], size: int,
                 orientations: tuple[Orientation, ...] = ("axial",)) -> None:
        frame = DomainFrame.of(geometry)
        self.half = max(geometry.domain.width, geometry.domain.depth) / 2 / frame.scale
        self.size, self.orientations = int(size), tuple(orientations)
        self.z_range = z_range
        self.half_height = geometry.domain.height / 2 / frame.scale
        axis = torch.linspace(-self.half, self.half, self.size)
        self.step = float(axis[1] - axis[0]) if self.size > 1 else 2.0 * self.half
        u, v = torch.meshgrid(axis, axis, indexing="ij")  # rows: y, columns: x
        self.rows, self.cols = u.reshape(-1), v.reshape(-1)
        self.outline = PolyPath(geometry.domain.outline(512) / frame.scale)

    def inside(self, x: Tensor, y: Tensor) -> Tensor:
        """1 where (x, y) lies inside the outline, else 0 (the prism's cross-section)."""
        points = np.column_stack([x.numpy(), y.numpy()])
        return torch.as_tensor(self.outline.contains_points(points), dtype=torch.float32)

    def sample(self, count: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """(count, size², 3) coordinates (x, y, z) and (count, size²) masks of `count` planes,
        each of an orientation drawn uniformly from `orientations`, at a random position, its
        pixel grid shifted by a random fraction of a pixel along both image axes."""
        coords, masks = [], []
        kinds = torch.randint(len(self.orientations), (count,), generator=generator)
        offsets = torch.rand(count, generator=generator)
        shifts = (torch.rand(count, 2, generator=generator) - 0.5) * self.step
        for kind, offset, (du, dv) in zip(kinds.tolist(), offsets.tolist(), shifts.tolist(),
                                          strict=True):
            rows, cols = self.rows + du, self.cols + dv
            orientation = self.orientations[kind]
            if orientation == "axial":
                z = self.z_range[0] + offset * (self.z_range[1] - self.z_range[0])
                plane = torch.stack([cols, rows, torch.full_like(rows, z)], -1)
            else:
                plane = self._vertical(orientation, (2.0 * offset - 1.0) * self.half, rows, cols)
            coords.append(plane)
            masks.append(self.inside(plane[:, 0], plane[:, 1]))
        return torch.stack(coords), torch.stack(masks)

    def _vertical(self, orientation: Orientation, fixed: float, rows: Tensor,
                  cols: Tensor) -> Tensor:
        """A coronal (y = fixed) or sagittal (x = fixed) plane; image rows run along z (top:
        up), columns along the other horizontal axis."""
        z = -rows * self.half_height / self.half
        if orientation == "coronal":
            return torch.stack([cols, torch.full_like(cols, fixed), z], -1)
        return torch.stack([torch.full_like(cols, fixed), cols, z], -1)
