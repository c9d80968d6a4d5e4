"""Projection between mesh elements and the voxel grid.

The mask holds the voxels whose centre lies inside the domain's outline. Each tetrahedron is
sampled at a fixed set of barycentric points; a point counts for the voxel it falls in, or
for the nearest masked voxel when it falls in an unmasked one (thin slivers at the boundary).
P[e, v] is the fraction of element e's points in voxel v, so every row sums to 1:
an element's conductivity is the volume-weighted mean of the voxels it overlaps,
σ_e = Σ_v P[e, v] σ_v, and the voxel Jacobian is J_vox = J_elem P.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from matplotlib.path import Path as PolyPath
from scipy import ndimage

from service.contract.geometry import GeometrySpec
from service.contract.grid import GridSpec, voxel_edges

_SAMPLES = 64


def domain_mask(spec: GeometrySpec, grid: GridSpec) -> np.ndarray:
    """P x R x C bool: voxel centres inside the outline (all planes lie within the slab)."""
    dom = spec.domain
    _, ye, xe = voxel_edges(grid, dom.width, dom.depth, dom.height)
    yc, xc = 0.5 * (ye[1:] + ye[:-1]), 0.5 * (xe[1:] + xe[:-1])
    yy, xx = np.meshgrid(yc, xc, indexing="ij")
    inside = PolyPath(dom.outline(1024)).contains_points(np.column_stack([xx.ravel(), yy.ravel()]))
    return np.broadcast_to(inside.reshape(grid.rows, grid.cols), grid.shape).copy()


def barycentric_samples(n: int = _SAMPLES) -> np.ndarray:
    """n x 4 fixed barycentric points spread evenly over a tetrahedron (Halton, sorted
    spacings), the same for every element so the projection is deterministic."""
    primes = (2, 3, 5)
    u = np.empty((n, 3))
    for d, b in enumerate(primes):
        for i in range(n):
            f, r, k = 1.0, 0.0, i + 1
            while k:
                f /= b
                r += f * (k % b)
                k //= b
            u[i, d] = r
    s = np.sort(u, axis=1)
    return np.diff(np.column_stack([np.zeros(n), s, np.ones(n)]), axis=1)


def projection_matrix(spec: GeometrySpec, grid: GridSpec, nodes: np.ndarray, tets: np.ndarray,
                      mask: np.ndarray) -> sp.csr_matrix:
    """E x V sparse P with rows summing to 1, over the V masked voxels in C order."""
    dom = spec.domain
    ze, ye, xe = voxel_edges(grid, dom.width, dom.depth, dom.height)
    bary = barycentric_samples()
    pts = np.einsum("sk,ekd->esd", bary, nodes[tets])  # E x S x 3
    ip = np.clip(np.searchsorted(ze, pts[..., 2], side="right") - 1, 0, grid.planes - 1)
    ir = np.clip(np.searchsorted(ye, pts[..., 1], side="right") - 1, 0, grid.rows - 1)
    ic = np.clip(np.searchsorted(xe, pts[..., 0], side="right") - 1, 0, grid.cols - 1)
    # nearest masked voxel for every voxel (identity on masked ones)
    _, nearest = ndimage.distance_transform_edt(~mask, return_indices=True)
    flat = np.ravel_multi_index(tuple(nearest[k][ip, ir, ic] for k in range(3)), grid.shape)
    column = -np.ones(mask.size, dtype=np.int64)
    column[np.flatnonzero(mask)] = np.arange(int(mask.sum()))
    cols = column[flat].ravel()
    rows = np.repeat(np.arange(tets.shape[0]), bary.shape[0])
    vals = np.full(rows.size, 1.0 / bary.shape[0])
    return sp.coo_matrix((vals, (rows, cols)), shape=(tets.shape[0], int(mask.sum()))).tocsr()
