"""The whitened, prior-weighted Jacobian's singular system, computed once per model and cached;
generalised cross-validation (GCV) on it.

Data weighting. The belt's noise is a fixed floor in volts, so channel i of the normalised data
Δv_i = (v_i - v_ref,i)/|v_ref,i| (D2IP eq. 1, `base.normalise`, divisor floored at a tenth of
the rms) carries noise ∝ 1/|v_ref,i|: channels with a small reference voltage are the noisiest.
Rows are whitened by w_i = max(|v0_i|, floor) / rms(v0), the model's reference voltages
standing in for the measured ones (so W is fixed per model): every method fits
‖W^½(Δv - J x)‖², W = diag(w²).

Prior weighting. Γ = D², D = diag(d): d = 1 (identity) or d_j = ‖column j of diag(w) J‖^½
(NOSER, Γ = diag(JᵀWJ)^½: Cheney et al. 1990 with the exponent ½ that EIDORS uses by default).

With J̃ = diag(w) J D⁻¹ = U S Ṽᵀ we keep U (M x M) and s (M), from the eigen-decomposition of
the M x M Gram matrix J̃ J̃ᵀ = U S² Uᵀ: all that Tikhonov, GCV and the TV data step need; the
V x M factor Ṽ is never formed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from worker.recon import store
from worker.recon.base import NORMALISE_FLOOR

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


def data_weights(model: ForwardModel) -> np.ndarray:
    """w_i = max(|v0_i|, floor) / rms(v0): whitens noise of constant size in volts, with the
    divisor floor of `normalise`."""
    v0 = np.abs(np.asarray(model.reference_voltages, dtype=float))
    rms = np.sqrt(np.mean(v0**2))
    return np.maximum(v0, NORMALISE_FLOOR * rms) / rms


def spectrum(model: ForwardModel, prior: Prior = "noser") -> Spectrum:
    """The singular system for `prior`, from the recon cache or computed (M²V flops)."""
    if prior not in PRIORS:
        raise ValueError(f"prior: unknown prior {prior!r}; priors: {', '.join(PRIORS)}")

    def build() -> dict[str, np.ndarray]:
        w = data_weights(model)
        jw = model.jacobian * w[:, None]
        d = np.sqrt(np.linalg.norm(jw, axis=0)) if prior == "noser" else np.ones(jw.shape[1])
        jt = jw / d
        lam, u = np.linalg.eigh(jt @ jt.T)
        order = np.argsort(lam)[::-1]
        return {"w": w, "d": d, "u": u[:, order], "s": np.sqrt(np.clip(lam[order], 0.0, None))}

    arrays = store.cached(store.path_for(model, "spectrum", {"prior": prior}), build)
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
