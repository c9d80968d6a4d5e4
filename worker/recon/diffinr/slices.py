"""2D slices of the INR's volume for the 2D diffusion prior (issue 18: a 2D prior on sections).

Each iteration samples `count` axial planes at heights drawn uniformly between the lowest and
the highest voxel-plane centre, evaluates the INR on a size x size pixel grid over the domain's
bounding square (the positional encodings γ(p) of eq. 14, "every pixel in the grid"), and zeroes
the pixels outside the outline: in a difference image the outside is the background Δσ = 0, so
the domain's boundary is no edge for the prior to see. `orientations` may add coronal (x-z) and
sagittal (y-z) planes through random rows and columns.
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
        half = max(geometry.domain.width, geometry.domain.depth) / 2 / frame.scale
        self.size, self.orientations = int(size), tuple(orientations)
        self.z_range = z_range
        self.half_height = geometry.domain.height / 2 / frame.scale
        self.axis = torch.linspace(-half, half, self.size)
        u, v = torch.meshgrid(self.axis, self.axis, indexing="ij")  # rows: y, columns: x
        self.rows, self.cols = u.reshape(-1), v.reshape(-1)
        outline = geometry.domain.outline(512) / frame.scale
        inside = PolyPath(outline).contains_points(
            np.column_stack([self.cols.numpy(), self.rows.numpy()]))
        self.axial_mask = torch.as_tensor(inside, dtype=torch.float32)

    def sample(self, count: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """(count, size², 3) coordinates (x, y, z) and (count, size²) masks of `count` planes,
        each of an orientation drawn uniformly from `orientations`."""
        coords, masks = [], []
        kinds = torch.randint(len(self.orientations), (count,), generator=generator)
        offsets = torch.rand(count, generator=generator)
        for kind, offset in zip(kinds.tolist(), offsets.tolist(), strict=True):
            orientation = self.orientations[kind]
            if orientation == "axial":
                z = self.z_range[0] + offset * (self.z_range[1] - self.z_range[0])
                coords.append(torch.stack([self.cols, self.rows, torch.full_like(self.rows, z)],
                                          -1))
                masks.append(self.axial_mask)
            else:
                index = int(round(offset * (self.size - 1)))
                coords.append(self._vertical(orientation, index))
                masks.append(self._vertical_mask(orientation, index))
        return torch.stack(coords), torch.stack(masks)

    def _vertical(self, orientation: Orientation, index: int) -> Tensor:
        """A coronal (y = axis[index]) or sagittal (x = axis[index]) plane; image rows run
        along z (top: up)."""
        fixed = float(self.axis[index])
        z = -self.rows * self.half_height / self.axis[-1]
        across = self.cols
        if orientation == "coronal":
            return torch.stack([across, torch.full_like(across, fixed), z], -1)
        return torch.stack([torch.full_like(across, fixed), across, z], -1)

    def _vertical_mask(self, orientation: Orientation, index: int) -> Tensor:
        """Inside the outline along the plane's horizontal line (prisms: the same at every z)."""
        grid = self.axial_mask.reshape(self.size, self.size)
        line = grid[index, :] if orientation == "coronal" else grid[:, index]
        return line[None, :].expand(self.size, self.size).reshape(-1)
