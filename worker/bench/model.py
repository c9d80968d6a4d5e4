"""Forward-model build benchmark: cold vs cached build, and our Jacobian vs pyEIT's.

pyEIT (`pyeit.eit.fem.EITForward.compute_jac`, point electrodes, 3D) inverts the dense
stiffness matrix and loops over elements in Python, so it is compared on small meshes, with
exactly the same nodes and tetrahedra as ours (its electrodes are the boundary nodes nearest
our electrode centres) and the same skip-4 pattern, measurements in the same order. Our side is
the CEM factorisation, the L-1 basis solves and the adjoint Jacobian (`worker.forward.fem` +
`worker.forward.jacobian`), projection onto the voxel grid included.

Agreement: the Pearson correlation of the two voxel Jacobians, both as σ ∂V/∂σ (ours without
the 1/|v0| row normalisation; pyEIT's `compute_jac` returns -∂V/∂σ, projected onto the same
voxels). It stays below 1 because point and complete electrodes differ near the electrodes.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import scipy.sparse as sp
from tqdm import tqdm

from service.contract.geometry import resolve_geometry
from service.contract.grid import resolve_grid
from service.contract.protocol import resolve_protocol
from worker.forward import load_model
from worker.forward.fem import CEM, measure
from worker.forward.jacobian import voxel_jacobian
from worker.forward.mesh import Mesh, Outline, build_mesh, electrode_centres
from worker.forward.voxel import domain_mask, projection_matrix


def build_times(cache_dir: str) -> dict[str, Any]:
    """Default model: cold build (empty cache) and load from the cache."""
    cold = load_model(cache_dir=cache_dir, progress=True)
    warm = load_model(cache_dir=cache_dir)
    return {"cold_seconds": cold.build_seconds, "cached_seconds": warm.build_seconds,
            **{k: v for k, v in cold.summary().items() if k.startswith("n_")}}


def _projection(mesh: Mesh, geometry: Any) -> sp.csr_matrix:
    grid = resolve_grid(None)
    return projection_matrix(geometry, grid, mesh.nodes, mesh.tets, domain_mask(geometry, grid))


def _ours(mesh: Mesh, geometry: Any) -> tuple[float, np.ndarray]:
    """(seconds, σ ∂V/∂σ on the default grid's voxels, M x V)."""
    p = resolve_protocol(None).build(geometry.electrodes.count)
    t0 = time.perf_counter()
    cem = CEM(mesh, geometry.electrodes.contact_impedance)
    sigma = np.full(mesh.n_elements, geometry.background_conductivity)
    sol = cem.solve(sigma)
    v0 = measure(sol, p.currents, p.meas_injection, p.meas_weights)
    jacobian = voxel_jacobian(cem, sol, sigma, p, 1.0, v0, _projection(mesh, geometry))
    return time.perf_counter() - t0, jacobian * np.abs(v0)[:, None]


def _pyeit(mesh: Mesh, geometry: Any) -> tuple[float, np.ndarray]:
    """(seconds, σ ∂V/∂σ on the same voxels from pyEIT's element Jacobian, M x V)."""
    from pyeit.eit.fem import EITForward
    from pyeit.eit.protocol import create
    from pyeit.mesh import PyEITMesh

    centres = electrode_centres(geometry, Outline(geometry))
    el_pos = np.array([np.argmin(np.linalg.norm(mesh.nodes - c, axis=1)) for c in centres])
    pm = PyEITMesh(node=mesh.nodes, element=mesh.tets, perm=geometry.background_conductivity,
                   el_pos=el_pos, ref_node=int(np.argmax(mesh.nodes[:, 2])))
    fwd = EITForward(pm, create(n_el=len(el_pos), dist_exc=5, step_meas=5, parser_meas="std"))
    t0 = time.perf_counter()
    element_jacobian, _ = fwd.compute_jac()
    seconds = time.perf_counter() - t0
    sensitivity = -geometry.background_conductivity * element_jacobian  # pyEIT: -∂V/∂σ
    return seconds, np.asarray((_projection(mesh, geometry).T @ sensitivity.T).T)


def jacobian_comparison(sizes: tuple[float, ...] = (0.05, 0.025, 0.0165)) -> list[dict[str, Any]]:
    """Ours and pyEIT's Jacobian on the same meshes, coarse to fine: times and correlation."""
    geometry = resolve_geometry("thorax-2x16")
    rows = []
    for h in tqdm(sizes, desc="Jacobian vs pyEIT", unit="mesh"):
        mesh = build_mesh(geometry, size=h)
        (ours, ours_jacobian), (theirs, pyeit_jacobian) = (_ours(mesh, geometry),
                                                           _pyeit(mesh, geometry))
        correlation = np.corrcoef(ours_jacobian.ravel(), pyeit_jacobian.ravel())[0, 1]
        rows.append({"mesh_size": h, "n_nodes": mesh.n_nodes, "n_elements": mesh.n_elements,
                     "ours_seconds": ours, "pyeit_seconds": theirs,
                     "speedup": theirs / ours, "jacobian_correlation": float(correlation)})
    return rows


def scaling_exponents(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Fitted exponent b of time ∝ nodes^b (2^b is the cost of doubling the nodes)."""
    n = np.log([r["n_nodes"] for r in rows])
    return {k: float(np.polyfit(n, np.log([r[f"{k}_seconds"] for r in rows]), 1)[0])
            for k in ("ours", "pyeit")}
