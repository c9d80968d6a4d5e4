"""The rules that give each frame its lambda_TV of eq. (14): the one place D2IP decides it.

`FixedLambda`: `LossConfig.lam` every frame (the paper: 0.002). `DataScaledRule` (beyond the
paper): over a breath the data term grows ~45x from the first to the last frame while the TV
terms grow only with the image's amplitude, so a fixed lambda weighs the prior far more in quiet
frames than in deep ones; this rule gives every frame

    lambda_i = kappa * E_i / TV_s(x_T,i),   E_i = (1/M) ||W^1/2 Delta v_i||^2,

the project's one data-scaled rule (`worker.recon.lambda_rule.DataScaledLambda`, which TV and
R-SIP use with kappa 0.02) with D2IP's kappa (`KAPPA`), D2IP's eps and eq. (14)'s units (the
data energy is a mean over the M channels): at the frame's Tikhonov image x_T the spatial TV
term (eq. 12) weighs kappa times the data energy (the data term at x = 0). It is homogeneous:
Delta v -> c Delta v gives lambda -> c lambda, so the minimiser scales with the data and a
shallow breath is not flattened by a weight tuned for a deep one. See docs/d2ip.md for the
kappa sweep.

A rule is a frozen configuration object; `bind(model, weights, loss)` gives the per-frame
function `Delta v -> lambda_TV` for one model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from worker.recon.finite_difference import MaskedDifference
from worker.recon.lambda_rule import DataScaledLambda
from worker.recon.tikhonov import tikhonov_operator

if TYPE_CHECKING:
    from worker.forward.model import ForwardModel
    from worker.recon.d2ip.objective import LossConfig

KAPPA = 0.0075  # tuned on healthy-deep-breath (docs/d2ip.md); the TV baseline's is 0.02
FrameLambda = Callable[[np.ndarray], float]


@dataclass(frozen=True)
class FixedLambda:
    """lambda_TV = `LossConfig.lam` for every frame (the paper)."""

    name: ClassVar[str] = "fixed"

    def bind(self, model: ForwardModel, weights: np.ndarray, loss: LossConfig) -> FrameLambda:
        return lambda dv: loss.lam

    def settings(self) -> dict[str, Any]:
        """What the rule adds to the reconstructor's settings and the warm-start key."""
        return {}


@dataclass(frozen=True)
class DataScaledRule:
    """lambda_i = kappa * E_i / TV_s(x_T,i) for normalised frames Delta v_i (module docstring)."""

    name: ClassVar[str] = "data"
    kappa: float = KAPPA

    def __post_init__(self) -> None:
        if not self.kappa > 0:
            raise ValueError(f"kappa: must be positive, got {self.kappa}")

    def bind(self, model: ForwardModel, weights: np.ndarray, loss: LossConfig) -> FrameLambda:
        rule = DataScaledLambda(MaskedDifference(model.mask), self.kappa, eps=loss.eps)
        tikhonov = torch.from_numpy(tikhonov_operator(model).matrix)  # R, (V, M)
        weights = np.asarray(weights, dtype=np.float64)

        def frame_lambda(dv: np.ndarray) -> float:
            """lambda_TV for one normalised frame (0 for a frame without data)."""
            dv = np.asarray(dv, dtype=np.float64)
            energy = float(np.mean((weights * dv) ** 2))
            with torch.no_grad():
                image = tikhonov @ torch.as_tensor(dv, dtype=torch.float32)
            return rule(image, energy).lam

        return frame_lambda

    def settings(self) -> dict[str, Any]:
        return {"kappa": self.kappa}


LambdaRule = FixedLambda | DataScaledRule
