"""The voxel grid that volumes live on.

Axis order is (P, R, C) everywhere in the project:
- P planes, bottom to top (+z, caudal to cranial);
- R rows, anterior to posterior (+y);
- C columns, patient's right to left as seen from the feet (+x; the radiological convention).
The grid spans the domain's bounding box: x in [-W/2, W/2], y in [-D/2, D/2], z in [0, H].
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PositiveInt

AXES = ("P", "R", "C")


class GridSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    planes: PositiveInt = Field(16, description="P, along +z (bottom to top)")
    rows: PositiveInt = Field(32, description="R, along +y (anterior to posterior)")
    cols: PositiveInt = Field(32, description="C, along +x (patient's right to left)")

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.planes, self.rows, self.cols)


DEFAULT_GRID = GridSpec()


def resolve_grid(value: Any = None) -> GridSpec:
    """A GridSpec from None (16 x 32 x 32), a (P, R, C) sequence, or a dict."""
    if isinstance(value, GridSpec):
        return value
    if value is None:
        return DEFAULT_GRID
    if isinstance(value, dict):
        return GridSpec.model_validate(value)
    if isinstance(value, (list, tuple)) and len(value) == 3:
        p, r, c = (int(v) for v in value)
        return GridSpec(planes=p, rows=r, cols=c)
    raise ValueError(f"grid: expected (P, R, C) or a mapping, got {value!r}")


def voxel_edges(grid: GridSpec, width: float, depth: float, height: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edges of the voxels along z (P+1), y (R+1) and x (C+1), in metres."""
    return (np.linspace(0.0, height, grid.planes + 1),
            np.linspace(-depth / 2, depth / 2, grid.rows + 1),
            np.linspace(-width / 2, width / 2, grid.cols + 1))
