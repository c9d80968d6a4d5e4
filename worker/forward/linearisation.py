"""The forward model linearised at a conductivity other than the background (Gauss-Newton).

Every method fits the linear model Δv ≈ J x of `ForwardModel.jacobian` (D2IP eq. 1), whose
unknown is Δσ/σ0 to first order, which is also the log-conductivity u = log(σ/σ0) to first
order. For large changes the two part, and the linear model fails: the tank's insulators
(σ = 0.01 σ0, Δσ/σ0 = -0.99) change the voltages as much as a linear change of about -2.4 would
(docs/diff-inr.md, "The data term"). Relinearising at the current estimate u_k, with u as the
unknown, is the Gauss-Newton step of the nonlinear fit:

    Δv ≈ F(u_k) + J(u_k) (u - u_k),

- F(u) = (V(σ) - v0) / |v0|: the normalised voltage change of the complete electrode model
  (`worker.forward.fem`) at the voxel conductivities σ_v = σ0 e^{u_v}, projected onto the
  elements as `ForwardModel.solve` does (σ_e = Σ_v P_ev σ_v);
- J(u) = ∂F/∂u, column v = e^{u_v} Σ_e P_ev σ0 ∂V/∂σ_e / |v0|: the adjoint Jacobian of
  `worker.forward.jacobian.voxel_jacobian` with the fields at σ and the factor σ0 (∂σ_e/∂u_v =
  P_ev σ0 e^{u_v}), so J(0) is the model's Jacobian.

u is kept within U_BOUNDS (σ/σ0 from 0.0067 to 20) where the model is solved: positive
conductivity is then built in, and the image is Δσ/σ0 = e^u - 1 ≥ -1. One relinearisation
solves the model once and forms one Jacobian (15 s on the tank's 128 000 elements on one
core).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from worker.forward.fem import Solution
from worker.forward.jacobian import voxel_jacobian
from worker.forward.operator import JacobianOperator

if TYPE_CHECKING:
    from worker.forward.model import ForwardModel

U_BOUNDS = (-5.0, 3.0)


@dataclass(frozen=True)
class Linearisation:
    """F(u) and J(u) at one u (module docstring)."""

    change: np.ndarray  # (M,) F(u), normalised like J's rows
    jacobian: np.ndarray  # (M, V) ∂F/∂u


def linearise(model: ForwardModel, u: np.ndarray) -> Linearisation:
    """F(u) and J(u) for the V masked voxels' log-conductivity ratios u."""
    ratio, solution = _solve(model, u)
    at_background = np.full(model.mesh.n_elements, model.geometry.background_conductivity)
    jacobian = voxel_jacobian(model.cem, solution, at_background, model.protocol,
                              model.geometry.current_amplitude, model.reference_voltages,
                              model.projection) * ratio
    return Linearisation(change=_change(model, solution), jacobian=jacobian)


def misfit(model: ForwardModel, dv: np.ndarray, u: np.ndarray) -> float:
    """(1/M) ‖W^½(Δv - F(u))‖²: the nonlinear data term at u (one solve, no Jacobian)."""
    _, solution = _solve(model, u)
    return _misfit(model, np.asarray(dv, dtype=float) - _change(model, solution))


def _solve(model: ForwardModel, u: np.ndarray) -> tuple[np.ndarray, Solution]:
    """σ/σ0 = e^u on the voxels (u clipped to U_BOUNDS) and the CEM solved at σ0 e^u, projected
    onto the elements as `ForwardModel.solve` projects."""
    u = np.clip(np.asarray(u, dtype=float), *U_BOUNDS)
    if u.shape != (model.n_voxels,):
        raise ValueError(f"u: expected shape ({model.n_voxels},), got {u.shape}")
    ratio = np.exp(u)
    background = model.geometry.background_conductivity
    return ratio, model.cem.solve(background * (model.projection @ ratio))


def _change(model: ForwardModel, solution: Solution) -> np.ndarray:
    """F: the solution's normalised voltage change from the reference, as J's rows."""
    v0 = model.reference_voltages
    return (model.voltages(solution) - v0) / np.abs(v0)


def _misfit(model: ForwardModel, residual: np.ndarray) -> float:
    return float(np.mean((model.operator.weights * residual) ** 2))


@dataclass(frozen=True)
class Relinearised:
    """One frame's data term linearised at u_k: ‖W^½(data - J_k u)‖² = ‖W^½(Δv - F(u_k) -
    J_k (u - u_k))‖², with the model's data weights W."""

    operator: JacobianOperator  # W^½ J(u_k)
    data: np.ndarray  # (M,) Δv - F(u_k) + J(u_k) u_k
    misfit: float  # (1/M) ‖W^½(Δv - F(u_k))‖²: the nonlinear data term at u_k


def relinearise(model: ForwardModel, dv: np.ndarray, u: np.ndarray) -> Relinearised:
    """The data term of frame `dv` (normalised like `worker.recon.base.normalise`) at u."""
    u = np.clip(np.asarray(u, dtype=float), *U_BOUNDS)
    lin = linearise(model, u)
    residual = np.asarray(dv, dtype=float) - lin.change
    return Relinearised(operator=JacobianOperator(lin.jacobian, model.operator.weights),
                        data=residual + lin.jacobian @ u, misfit=_misfit(model, residual))
