"""The data-scaled TV weight: per frame, λ = κ E / TV_ε(x_T), and the TV smoothing ε.

x_T is the frame's Tikhonov image (`worker.recon.tikhonov`) and E its data energy, the data term
at x = 0 in the method's own units: ‖W^½Δv‖² for TV and R-SIP, whose data term is that sum;
(1/M) ‖W^½Δv‖² for D2IP's eq. (14), a mean. At x_T the TV term (`finite_difference`, D2IP
eq. 12) then weighs κ times the data energy. D2IP fixes λ (0.002, paper IV.D); over a breath
the data term grows far more than the image's TV, so a fixed λ weighs the prior far more in
quiet frames than in deep ones.

ε: fixed (`eps=`, D2IP's 1e-6), or by default (EPS_REL · g)², g the rms of |D x_T| over the
voxels: smoothing at 1 % of the image's typical gradient, so it scales with the data.
Both scale with the data (Δv -> c Δv gives λ -> c λ and the relative ε -> c² ε), so the
minimiser is homogeneous of degree one in Δv like Tikhonov's: a shallow breath is not
flattened by a weight tuned for a deep one.

KAPPA = 0.02 is the TV and R-SIP rule: between 0.01 and 0.03, the best CC and the best edema
PSNR/ERR of a sweep (0.01, 0.03, 0.1) on the simulated cases (docs/reconstruction.md). D2IP's
`d2ip-scaled` uses its own κ (docs/d2ip.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from worker.recon.finite_difference import MaskedDifference, total_variation

KAPPA = 0.02
EPS_REL = 0.01


@dataclass(frozen=True)
class TVWeights:
    """The TV term's weight λ and smoothing ε for one frame."""

    lam: float
    eps: float


class DataScaledLambda:
    """λ = κ E / TV_ε(x_T) and ε for one frame (module docstring)."""

    def __init__(self, difference: MaskedDifference, kappa: float = KAPPA,
                 eps: float | None = None) -> None:
        if not kappa > 0:
            raise ValueError(f"kappa: must be positive, got {kappa}")
        self.difference, self.kappa, self.eps = difference, float(kappa), eps

    def smoothing(self, tikhonov_image: Tensor) -> float:
        """ε: the fixed one, or (EPS_REL · rms |D x_T|)²."""
        if self.eps is not None:
            return float(self.eps)
        differences = self.difference.apply(tikhonov_image)
        return float(EPS_REL**2 * differences.square().sum(0).mean())

    def __call__(self, tikhonov_image: Tensor, data_energy: float) -> TVWeights:
        """λ and ε for a frame with Tikhonov image x_T (V,) and data energy E; λ = 0 for a
        frame without data (E = 0)."""
        eps = self.smoothing(tikhonov_image)
        if data_energy == 0.0:
            return TVWeights(lam=0.0, eps=eps)
        tv = float(total_variation(tikhonov_image, self.difference, eps))
        return TVWeights(lam=self.kappa * data_energy / tv, eps=eps)
