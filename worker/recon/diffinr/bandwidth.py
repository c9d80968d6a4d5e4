"""Bandwidth control of the Fourier features (Diff-INR eq. 18, section 4.3).

The seed sets the RFF bandwidth σ from the reconstruction mesh's mean edge length h̄ and its
element count N_e, scaled by a hyperparameter α, so that σ follows the mesh's information
density. The formula itself did not survive in the copy of the seed we build from (only its
ingredients and the role of α), so this module states ours:

    σ = α / ℓ,   ℓ = sqrt(h̄ · (|Ω̂| / N_e)^{1/d}),

ℓ the geometric mean of the two length scales of the mesh, both in the normalised coordinates
of `worker.recon.diffinr.inr.DomainFrame`: the mean edge length h̄ (dominated by the refined
elements at the electrodes) and the edge of the mean element volume (|Ω̂|/N_e)^{1/d} (the bulk).
A finer mesh (smaller ℓ) gets a larger σ, i.e. the INR may carry higher spatial frequencies,
which the seed ties to the denser information of a finer mesh. ALPHA is ours, from the sweep
in docs/diff-inr.md (the seed's value did not survive either).
"""

from __future__ import annotations

import numpy as np

from worker.forward.mesh import Mesh

ALPHA = 0.15

_TET_EDGES = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))


def mean_edge_length(mesh: Mesh, scale: float = 1.0) -> float:
    """h̄: mean length of the mesh's distinct edges, divided by `scale`."""
    pairs = np.concatenate([mesh.tets[:, list(e)] for e in _TET_EDGES])
    edges = np.unique(np.sort(pairs, axis=1), axis=0)
    lengths = np.linalg.norm(mesh.nodes[edges[:, 0]] - mesh.nodes[edges[:, 1]], axis=1)
    return float(lengths.mean() / scale)


def mesh_volume(mesh: Mesh) -> float:
    """|Ω|: the sum of the tetrahedra's volumes (m³)."""
    a, b, c, d = (mesh.nodes[mesh.tets[:, k]] for k in range(4))
    return float(np.abs(np.einsum("ij,ij->i", b - a, np.cross(c - a, d - a))).sum() / 6.0)


def bandwidth(mesh: Mesh, scale: float, alpha: float = ALPHA) -> float:
    """σ of eq. (18) (our form, module docstring) for a tetrahedral mesh, coordinates / scale."""
    if not alpha > 0:
        raise ValueError(f"alpha: must be positive, got {alpha}")
    element = (mesh_volume(mesh) / scale**3 / mesh.n_elements) ** (1.0 / 3.0)
    return float(alpha / np.sqrt(mean_edge_length(mesh, scale) * element))
