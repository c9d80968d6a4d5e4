"""Eq. (18) as we state it: σ = α / sqrt(h̄ (|Ω̂|/N_e)^(1/3))."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from worker.forward.mesh import Mesh
from worker.recon.diffinr.bandwidth import bandwidth, mean_edge_length, mesh_volume


def cube_mesh(n: int) -> Mesh:
    """The unit cube cut into n³ cubes of 6 tetrahedra (Kuhn), no electrodes."""
    g = np.arange(n + 1)
    zz, yy, xx = np.meshgrid(g, g, g, indexing="ij")
    nodes = np.column_stack([xx.ravel(), yy.ravel(), zz.ravel()]) / n
    index = np.arange((n + 1) ** 3).reshape(n + 1, n + 1, n + 1)
    tets = []
    for k in range(n):
        for j in range(n):
            for i in range(n):
                c = [index[k + dz, j + dy, i + dx] for dz in (0, 1) for dy in (0, 1)
                     for dx in (0, 1)]
                for a, b in ((1, 3), (1, 5), (2, 3), (2, 6), (4, 5), (4, 6)):
                    tets.append([c[0], c[a], c[b], c[7]])
    return Mesh(nodes=nodes, tets=np.array(tets), electrodes=())


def test_lengths_and_volume_of_a_known_mesh() -> None:
    mesh = cube_mesh(2)
    assert mesh_volume(mesh) == pytest.approx(1.0)
    # Kuhn cubes: the edges are axis steps (1/n), face diagonals and the main diagonal
    assert 0.5 < mean_edge_length(mesh) < 0.5 * np.sqrt(3)
    assert mean_edge_length(mesh, scale=2.0) == pytest.approx(mean_edge_length(mesh) / 2)


def test_finer_meshes_get_a_larger_bandwidth_in_proportion() -> None:
    coarse, fine = cube_mesh(2), cube_mesh(4)
    ratio = bandwidth(fine, 1.0) / bandwidth(coarse, 1.0)
    assert ratio == pytest.approx(2.0, rel=0.05)  # both length scales halve
    assert bandwidth(coarse, 1.0, alpha=0.3) == pytest.approx(2 * bandwidth(coarse, 1.0, 0.15))


def test_bandwidth_is_free_of_units() -> None:
    mesh = cube_mesh(2)
    metres = dataclasses.replace(mesh, nodes=mesh.nodes * 0.14)
    assert bandwidth(metres, 0.14) == pytest.approx(bandwidth(mesh, 1.0))
    with pytest.raises(ValueError, match="alpha"):
        bandwidth(mesh, 1.0, alpha=0.0)
