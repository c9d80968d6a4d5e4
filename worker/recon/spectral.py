"""The prior-weighted singular systems that Tikhonov needs, and GCV on them.

Data weighting: the whitening weights w of `worker.forward.operator` (A = W^½ J, W = diag(w²)).

Prior weighting. Γ = D², D = diag(d): d = 1 (identity) or d_j = ‖column j of A‖^½
(NOSER, Γ = diag(JᵀWJ)^½: Cheney et al. 1990 with the exponent ½ that EIDORS uses by default).

With J̃ = A D⁻¹ = U S Ṽᵀ we keep U (M x M) and s (M), from the eigen-decomposition of the
M x M Gram matrix J̃ J̃ᵀ = U S² Uᵀ. For the identity prior J̃ = A and the system is the shared
operator's (`JacobianOperator.spectrum`); the NOSER one is computed once per model and cached
on disk (`worker.recon.store`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from worker.forward.operator import gram_spectrum
from worker.recon import store
from worker.storage import cached_arrays

if TYPE_CHECKING:
    from worker.forward.model import ForwardModel

Prior = Literal["noser", "identity"]
PRIORS: tuple[Prior, ...] = ("noser", "identity")


@dataclass(frozen=True)
class Spectrum:
    """Weights and singular system of J̃ = diag(w) J diag(1/d)."""

    w: np.ndarray  # (M,) data weights
    d: np.ndarray  # (V,) prior weights
    u: np.ndarray  # (M, M) left singular vectors, columns
    s: np.ndarray  # (M,) singular values, descending


def spectrum(model: ForwardModel, prior: Prior = "noser") -> Spectrum:
    """The singular system for `prior`: the operator's, or the NOSER one from the recon cache
    or computed (M²V flops)."""
    if prior not in PRIORS:
        raise ValueError(f"prior: unknown prior {prior!r}; priors: {', '.join(PRIORS)}")
    operator = model.operator
    if prior == "identity":
        system = operator.spectrum
        return Spectrum(w=operator.weights, d=np.ones(operator.n_voxels), u=system.basis,
                        s=system.singular_values)

    def build() -> dict[str, np.ndarray]:
        whitened = operator.whitened
        d = np.sqrt(np.linalg.norm(whitened, axis=0))
        system = gram_spectrum(whitened / d)
        return {"w": operator.weights, "d": d, "u": system.basis, "s": system.singular_values}

    arrays = cached_arrays(store.path_for(model, "spectrum", {"prior": prior}), build)
    return Spectrum(w=arrays["w"], d=arrays["d"], u=arrays["u"], s=arrays["s"])


def gcv(s: np.ndarray, beta2: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """Wahba's GCV function G(μ) = ‖(I - A(μ)) b‖² / tr(I - A(μ))² for each μ.

    s: singular values; beta2: squared data coefficients (uᵢᵀ b)² (or their expectation);
    with filter factors fᵢ = μ²/(sᵢ² + μ²) the residual is Σ fᵢ² βᵢ² and the trace Σ fᵢ.
    """
    f = mu[:, None] ** 2 / (s[None, :] ** 2 + mu[:, None] ** 2)
    return (f**2 @ beta2) / f.sum(axis=1) ** 2


def gcv_minimiser(s: np.ndarray, beta2: np.ndarray, points: int = 400) -> float:
    """The μ in [1e-5 s₀, 10 s₀] (log grid) that minimises the GCV function."""
    mu = s[0] * np.logspace(-5.0, 1.0, points)
    return float(mu[np.argmin(gcv(s, beta2, mu))])
