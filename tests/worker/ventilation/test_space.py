from __future__ import annotations

import numpy as np
import pytest

from service.contract.geometry import resolve_geometry
from service.contract.grid import resolve_grid, voxel_edges
from worker.ventilation.space import VoxelSpace, geometry_space


def test_from_extent_matches_the_forward_grid() -> None:
    """The centres are the midpoints of `service.contract.grid.voxel_edges`."""
    dom = resolve_geometry("thorax-2x16").domain
    grid = resolve_grid((16, 32, 32))
    space = VoxelSpace.from_extent(grid.shape, dom.width, dom.depth, dom.height)
    for centres, edges in zip(space.centres(),
                              voxel_edges(grid, dom.width, dom.depth, dom.height), strict=True):
        assert np.allclose(centres, 0.5 * (edges[1:] + edges[:-1]))
    assert space.plane_of(0.07) == 5 and space.plane_of(-1.0) == 0 and space.plane_of(9.0) == 15


def test_geometry_space_is_the_domain_grid_and_its_rings() -> None:
    spec = resolve_geometry("thorax-2x16")
    space, rings = geometry_space(spec, (16, 32, 32))
    dom = spec.domain
    assert space == VoxelSpace.from_extent((16, 32, 32), dom.width, dom.depth, dom.height)
    assert rings == tuple(spec.electrodes.ring_heights) and len(rings) == 2


def test_spacing_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        VoxelSpace((2, 2, 2), (0.0, 1.0, 1.0), (0.0, 0.0, 0.0))
