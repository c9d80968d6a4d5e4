"""Tikhonov reconstruction: one precomputed matrix, one matrix-vector product per frame.

    x = argmin ‖W^½(Δv - J x)‖² + μ² ‖D x‖²,   Γ = D²   (D2IP eq. 2 with a quadratic prior)
      = R Δv,   R = (JᵀWJ + μ²Γ)⁻¹ JᵀW = D⁻¹ J̃ᵀ (J̃J̃ᵀ + μ²I)⁻¹ W^½,   J̃ = W^½ J D⁻¹

W whitens the data (`worker.forward.operator`) and Γ is the NOSER (default) or identity prior
(`worker.recon.spectral`).
The second form, by the push-through identity, needs only the M x M Gram matrix J̃J̃ᵀ = U S² Uᵀ
instead of a V x V solve: R = D⁻¹ J̃ᵀ U diag(1/(s² + μ²)) Uᵀ W^½. R (float32, V x M) is built
once per model and setting and cached on disk (`worker.recon.store`).

The same formula factors R = L Q (`worker.recon.linear.Factored`), L = D⁻¹ J̃ᵀ U_r diag(1/(s² +
μ²)) (V x r) and Q = U_rᵀ W^½ (r x M), over the r columns that `linear.rank_columns` keeps: J̃ᵀ
u_i vanishes beyond J's rank (at most M/2 with reciprocal pairs kept), so the product is R to
float32 rounding. The dense R is computed from the factors (one home for the formula) and kept
for the methods that start from it (TV, RSIP, D2IP's λ rule); the preview applies the factors.

The objective in the coefficients c = Q Δv (b = W^½ Δv, filter factors fᵢ = sᵢ²/(sᵢ² + μ²)):
with D L = Ṽ_r diag(gᵢ), gᵢ = sᵢ/(sᵢ² + μ²), Ṽ's columns orthonormal, and J̃ṽᵢ = sᵢuᵢ, the
solution from the first k components x_k = Σ_{i<k} lᵢcᵢ has

    ‖W^½(Δv − J x_k)‖² + μ²‖D x_k‖² = ‖b‖² − Σ_{i<k} fᵢ cᵢ²,

since 2fᵢ − fᵢ² − μ²gᵢ² = fᵢ and Σ_all cᵢ² = ‖b‖² (U orthogonal). The preview computes its loss
so (`linear.Factored` with `weights` w and `gain` f): no M x M product per frame.

Truncation (`truncate`, default `TRUNCATE_RTOL`). The preview keeps the first k components only,
k the smallest with Σ_{i≥k} gᵢ² ≤ rtol² Σ gᵢ²: for white data (cᵢ independent, equal variance,
what the data are in the components beyond the first ~100, where the design signal's expected
coefficients are noise to more than 97 %) the dropped part of the image has at most `rtol` of
its D-norm: E‖D(x − x_k)‖² ≤ rtol² E‖D x‖². A signal in the kept components only adds to the
denominator. The components dropped have sᵢ ≪ μ (gᵢ ≈ sᵢ/μ², fᵢ ≈ sᵢ²/μ² < 1e-4): Tikhonov has
already filtered them to almost nothing. The tall factor L then holds k columns instead of r.

Regularisation parameter (unless `mu=` is given): GCV on the expected data of a design signal.
GCV needs data, but one fixed μ keeps the method linear, so volumes (and the global impedance
curve) stay proportional to the data over the breath; a μ re-chosen per frame would not. The
design signal is a uniform change of the whole body by DESIGN_CONTRAST (the small end of a
breath) measured with white noise at `snr_db` (dB below the rms reference voltage, the
definition of `worker.simulation.noise`): E[(uᵢᵀb)²] = (uᵢᵀ b_design)² + η², η = 10^(-snr/20),
and μ minimises Wahba's GCV function of those coefficients (`spectral.gcv`). Channels with zero
weight (excluded electrodes, `JacobianOperator.with_weights`) carry neither signal nor noise:
the noise term is η² ‖uᵢ restricted to the used channels‖², and GCV runs over the first
M_used singular components only (the excluded channels' directions, singular value 0, would
otherwise add a constant to GCV's trace and drive μ towards 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from worker.recon import store
from worker.recon.base import register
from worker.recon.linear import Factored, LinearReconstructor, rank_columns
from worker.recon.spectral import Prior, Spectrum, gcv_minimiser, spectrum
from worker.storage import cached_arrays

if TYPE_CHECKING:
    from worker.forward.model import ForwardModel

DESIGN_CONTRAST = 0.05  # Δσ/σ0 of the design signal's uniform change
DEFAULT_SNR_DB = 50.0
TRUNCATE_RTOL = 3e-4  # the preview's truncation: share of the image's D-norm dropped (white data)


@dataclass(frozen=True)
class TikhonovOperator:
    """R and what the loss needs: the whitened residual W^½(Δv - J R Δv) = P Δv."""

    matrix: np.ndarray  # R, (V, M) float32
    factors: Factored  # R = L Q, float32 (V, r) and (r, M), with the diagonal objective
    residual: np.ndarray  # P, (M, M) float32
    d: np.ndarray  # (V,) prior weights, ‖D x‖² is the penalty
    mu: float
    prior: Prior
    singular_values: np.ndarray  # (r,) sᵢ of the factors' components

    def truncation_rank(self, rtol: float) -> int:
        """The smallest k with Σ_{i≥k} gᵢ² ≤ rtol² Σ gᵢ², gᵢ = sᵢ/(sᵢ² + μ²) (module
        docstring); r for rtol 0."""
        g2 = (self.singular_values / (self.singular_values**2 + self.mu**2)) ** 2
        tail = np.cumsum(g2[::-1])[::-1]  # tail[k] = Σ_{i≥k} gᵢ²
        return int(np.count_nonzero(tail > rtol**2 * tail[0]))


def design_mu(model: ForwardModel, spec: Spectrum, snr_db: float) -> float:
    """μ by GCV on the expected data of the design signal (module docstring)."""
    operator = model.operator
    b = operator.whiten(model.jacobian.sum(axis=1)) * DESIGN_CONTRAST
    noise = (spec.u[operator.active] ** 2).sum(axis=0)  # excluded channels carry no noise
    beta2 = (spec.u.T @ b) ** 2 + 10.0 ** (-snr_db / 10.0) * noise
    used = int(operator.active.sum())  # the data live in the used channels' space only
    return gcv_minimiser(spec.s[:used], beta2[:used])


def tikhonov_operator(model: ForwardModel, prior: Prior = "noser", mu: float | None = None,
                      snr_db: float = DEFAULT_SNR_DB) -> TikhonovOperator:
    """R for this model and setting, from the recon cache or built (M²V flops)."""
    spec = spectrum(model, prior)
    mu = float(mu) if mu is not None else design_mu(model, spec, snr_db)
    if not mu > 0:
        raise ValueError(f"mu: must be positive, got {mu}")

    def build() -> dict[str, np.ndarray]:
        u, s, w, d = spec.u, spec.s, spec.w, spec.d
        jt = model.operator.whitened / d  # J̃
        left = (jt.T @ u) / (s**2 + mu**2) / d[:, None]  # D⁻¹ J̃ᵀ U diag(1/(s² + μ²))
        keep = rank_columns(left)
        left, right = left[:, keep], u[:, keep].T * w[None, :]  # L, Q = U_rᵀ W^½
        residual = ((u * (mu**2 / (s**2 + mu**2))) @ u.T) * w[None, :]
        return {"matrix": (left @ right).astype(np.float32), "left": left.astype(np.float32),
                "right": right.astype(np.float32), "residual": residual.astype(np.float32),
                "singular_values": s[keep]}

    arrays = cached_arrays(store.path_for(model, "tikhonov", {"prior": prior, "mu": mu,
                                                              "form": "factored-s"}), build)
    s = arrays["singular_values"]
    return TikhonovOperator(matrix=arrays["matrix"],
                            factors=Factored(left=arrays["left"], right=arrays["right"],
                                             weights=spec.w, gain=s**2 / (s**2 + mu**2)),
                            residual=arrays["residual"], d=spec.d.astype(np.float32), mu=mu,
                            prior=prior, singular_values=s)


@register("tikhonov")
class Tikhonov(LinearReconstructor):
    """x = L_k (Q_k Δv) per frame (`worker.recon.linear`, R factored, the first k components,
    `truncate`: module docstring; 0 keeps all r); loss = the objective at x, from Q_k Δv.
    `half`: a single frame on the CPU reads L_k from a float16 copy (`worker.recon.linear`)."""

    method = "tikhonov"

    def __init__(self, model: ForwardModel, mu: float | None = None, prior: Prior = "noser",
                 snr_db: float = DEFAULT_SNR_DB, truncate: float = TRUNCATE_RTOL,
                 device: str = "cpu", half: bool = True) -> None:
        if not 0 <= truncate < 1:
            raise ValueError(f"truncate: expected 0 <= truncate < 1, got {truncate}")
        self.operator = tikhonov_operator(model, prior, mu, snr_db)
        factors = self.operator.factors
        self.truncate = float(truncate)
        super().__init__(model, factors.truncated(self.operator.truncation_rank(truncate)),
                         None, None, device, half=half)
        self.rule = "given" if mu is not None else f"design GCV at {snr_db:g} dB"

    @property
    def settings(self) -> dict[str, Any]:
        return {"mu": self.operator.mu, "mu_rule": self.rule, "prior": self.operator.prior,
                "rank": self.rank, "full_rank": self.operator.factors.rank,
                "truncate": self.truncate, "single_frame_float16": self.half is not None}
