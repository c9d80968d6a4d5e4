"""Sensitivity (Jacobian) of the measurements by the adjoint method, normalised and projected.

For measurement m with drive currents I c_d and measurement weights w_m, reciprocity gives
    ∂V_m/∂σ_e = -∫_e ∇u(I c_d) · ∇u(w_m) dx = -|e| ∇u_d·∇u_w   (P1: constant gradients),
where u(w_m) is the field of the measurement pattern driven as a current (the adjoint field).
Both fields are combinations of the L-1 basis solutions, so no extra solves are needed.

Normalisation as in D2IP eq. (1) (after [30] of that paper): unknowns are the relative change
x_e = Δσ_e/σ_e and data the relative change (v - v0)/|v0|, hence
    J_norm[m, e] = σ_e ∂V_m/∂σ_e / |v0_m|,
and the voxel Jacobian is J_norm P with the projection P of `worker.forward.voxel`.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from tqdm import tqdm

from service.contract.protocol import Protocol
from worker.forward.fem import CEM, Solution

_CHUNK = 64


def field_gradients(cem: CEM, solution: Solution) -> np.ndarray:
    """E x 3 x (L-1): the element gradient of each basis solution."""
    return np.einsum("eik,ekl->eil", cem.grads, solution.nodal[cem.mesh.tets])


def voxel_jacobian(cem: CEM, solution: Solution, sigma: np.ndarray, protocol: Protocol,
                   amplitude: float, v0: np.ndarray, projection: sp.csr_matrix,
                   progress: bool = False) -> np.ndarray:
    """M x V normalised Jacobian on the masked voxels."""
    grad = field_gradients(cem, solution)
    drive = np.einsum("eil,nl->ein", grad, amplitude * protocol.currents[:, :-1])
    weights, w_index = np.unique(protocol.meas_weights, axis=0, return_inverse=True)
    adjoint = np.einsum("eil,kl->eik", grad, weights[:, :-1])
    scale = -(np.broadcast_to(sigma, cem.volumes.shape) * cem.volumes)[:, None]
    pt = projection.T.tocsr()
    m_total = protocol.n_measurements
    out = np.empty((m_total, projection.shape[1]))
    starts = range(0, m_total, _CHUNK)
    for s in tqdm(starts, desc="Jacobian", unit="chunk", disable=not progress):
        sl = slice(s, min(s + _CHUNK, m_total))
        elem = scale * np.einsum("eim,eim->em", drive[:, :, protocol.meas_injection[sl]],
                                 adjoint[:, :, w_index.ravel()[sl]])
        out[sl] = (pt @ elem).T
    return out / np.abs(v0)[:, None]
