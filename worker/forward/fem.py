"""Complete electrode model (CEM) with P1 tetrahedra, assembled with scipy.sparse.

Unknowns: nodal potentials u (N) and electrode potentials U (L). With Γ_l the surface of
electrode l and z_l its contact impedance, the weak form gives the block system

    [ K(σ) + B   C ] [u]   [0]
    [ C^T        D ] [U] = [I]

    K_ij = Σ_e σ_e |e| ∇φ_i·∇φ_j,  B_ij = Σ_l 1/z_l ∫Γ_l φ_i φ_j,
    C_il = -1/z_l ∫Γ_l φ_i,        D_ll = |Γ_l| / z_l,

which is singular by one constant. Gauge: one electrode (the last by default) is grounded while
solving (its row and column are removed, which makes the matrix symmetric positive definite),
and the solution is then shifted so that the electrode potentials sum to zero; the result does
not depend on which electrode was grounded. Differential
measurements (weights summing to zero) do not depend on the gauge.

The matrix is factorised once (SuperLU) and every current pattern is a right-hand side: the
L-1 basis patterns e_l - e_L span all zero-sum injections, so any injection's potentials are a
linear combination of the basis solutions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import splu

from worker.forward.mesh import Mesh


def element_gradients(nodes: np.ndarray, tets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradients of the four P1 basis functions per tetrahedron (E x 3 x 4) and volumes (E)."""
    p = nodes[tets]
    edges = (p[:, 1:] - p[:, :1]).transpose(0, 2, 1)  # E x 3 x 3, columns are edge vectors
    inv = np.linalg.inv(edges)  # rows: gradients of barycentric coordinates 1..3
    grads = np.concatenate([-inv.sum(axis=1, keepdims=True), inv], axis=1)  # E x 4 x 3
    vol = np.abs(np.linalg.det(edges)) / 6.0
    return grads.transpose(0, 2, 1), vol


@dataclass(frozen=True)
class Solution:
    """Potentials for the L-1 basis injections e_l - e_L (unit currents), gauge Σ U = 0."""

    nodal: np.ndarray  # N x (L-1)
    electrode: np.ndarray  # L x (L-1)

    def electrode_voltages(self, currents: np.ndarray) -> np.ndarray:
        """Electrode potentials (n x L) for injections given as rows of currents (n x L)."""
        return currents[:, :-1] @ self.electrode.T


class CEM:
    """The complete electrode model on one mesh; conductivity per element in S/m."""

    def __init__(self, mesh: Mesh, contact_impedance: float) -> None:
        self.mesh = mesh
        self.grads, self.volumes = element_gradients(mesh.nodes, mesh.tets)
        self.n_electrodes = len(mesh.electrodes)
        self._boundary = self._electrode_blocks(contact_impedance)
        local = np.einsum("eki,ekj->eij", self.grads, self.grads) * self.volumes[:, None, None]
        self._local = local.reshape(-1, 16)  # per-element stiffness for σ = 1
        rows = np.repeat(mesh.tets, 4, axis=1)
        cols = np.tile(mesh.tets, (1, 4))
        self._rows, self._cols = rows.ravel(), cols.ravel()

    def _electrode_blocks(self, z: float) -> sp.csr_matrix:
        """The σ-independent part of the system: B, C, D (size N+L)."""
        n, L = self.mesh.n_nodes, self.n_electrodes
        rows, cols, vals = [], [], []
        for l_idx, tri in enumerate(self.mesh.electrodes):
            p = self.mesh.nodes[tri]
            area = 0.5 * np.linalg.norm(np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]), axis=1)
            mass = (np.ones((3, 3)) + np.eye(3))[None] * (area / 12.0)[:, None, None] / z
            rows.append(np.repeat(tri, 3, axis=1).ravel())
            cols.append(np.tile(tri, (1, 3)).ravel())
            vals.append(mass.ravel())
            load = np.repeat(area / 3.0 / z, 3)
            rows += [tri.ravel(), np.full(tri.size, n + l_idx)]
            cols += [np.full(tri.size, n + l_idx), tri.ravel()]
            vals += [-load, -load]
            rows.append(np.array([n + l_idx]))
            cols.append(np.array([n + l_idx]))
            vals.append(np.array([area.sum() / z]))
        return sp.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                             shape=(n + L, n + L)).tocsr()

    def system(self, sigma: np.ndarray, ground: int = -1) -> sp.csc_matrix:
        """The SPD system matrix for element conductivities, with electrode `ground` removed."""
        n, L = self.mesh.n_nodes, self.n_electrodes
        k = sp.coo_matrix(((self._local * sigma[:, None]).ravel(), (self._rows, self._cols)),
                          shape=(n + L, n + L)).tocsr()
        keep = np.delete(np.arange(n + L), n + ground % L)
        return (k + self._boundary)[keep][:, keep].tocsc()

    def solve(self, sigma: np.ndarray, ground: int = -1) -> Solution:
        """Factorise once and solve the L-1 basis injections e_l - e_L (1 A each)."""
        sigma = np.broadcast_to(np.asarray(sigma, dtype=float), (self.mesh.n_elements,))
        n, L = self.mesh.n_nodes, self.n_electrodes
        g = ground % L
        lu = splu(self.system(sigma, g), permc_spec="COLAMD")
        patterns = np.vstack([np.eye(L - 1), -np.ones((1, L - 1))])  # columns e_l - e_L
        rhs = np.zeros((n + L - 1, L - 1))
        rhs[n:] = np.delete(patterns, g, axis=0)
        x = lu.solve(rhs)
        electrode = np.insert(x[n:], g, 0.0, axis=0)
        shift = electrode.mean(axis=0, keepdims=True)
        return Solution(nodal=x[:n] - shift, electrode=electrode - shift)

    def electrode_currents(self, solution: Solution) -> np.ndarray:
        """L x (L-1): the current through each electrode, (1/z)∫Γ_l (U_l - u) dS, recovered from
        the potentials; equals the injected basis patterns when current is conserved."""
        n = self.mesh.n_nodes
        full = np.vstack([solution.nodal, solution.electrode])
        return (self._boundary[n:] @ full)


def measure(solution: Solution, currents: np.ndarray, meas_injection: np.ndarray,
            meas_weights: np.ndarray) -> np.ndarray:
    """Measured voltages (M): weights of measurement m applied to the electrode potentials of
    its injection."""
    u = solution.electrode_voltages(currents)  # n_inj x L
    return np.einsum("ml,ml->m", meas_weights, u[meas_injection])
