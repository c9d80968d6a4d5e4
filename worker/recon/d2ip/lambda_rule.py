"""A per-frame lambda_TV for eq. (11) that scales with the data (beyond the paper).

The paper fixes lambda_TV = 0.002. Over a breath the data term grows ~45x from the first to the
last frame while the TV terms grow only with the image's amplitude, so a fixed lambda weighs the
prior far more in quiet frames than in deep ones. `DataScaledLambda` gives every frame

    lambda_i = kappa * E_i / TV_s(x_T,i),   E_i = (1/M) ||W^1/2 Delta v_i||^2,

the TV baseline's rule (`worker.recon.tv_ops`, there with kappa 0.02) in eq. (11)'s units: at
the frame's Tikhonov image x_T the spatial TV term (eq. 8, mean over the mask) weighs kappa
times the data energy (the data term at x = 0). It is homogeneous: Delta v -> c Delta v gives
lambda -> c lambda, so the minimiser scales with the data and a shallow breath is not flattened
by a weight tuned for a deep one. See docs/d2ip.md for the kappa sweep.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from worker.recon.d2ip.loss import MaskGeometry, spatial_tv
from worker.recon.tikhonov import tikhonov_operator

if TYPE_CHECKING:
    from worker.forward.model import ForwardModel

KAPPA = 0.0075  # tuned on healthy-deep-breath (docs/d2ip.md); the TV baseline's is 0.02


class DataScaledLambda:
    """lambda_i = kappa * E_i / TV_s(x_T,i) for normalised frames Delta v_i (module docstring)."""

    def __init__(self, model: ForwardModel, weights: np.ndarray, kappa: float = KAPPA,
                 eps: float = 1e-6) -> None:
        if not kappa > 0:
            raise ValueError(f"kappa: must be positive, got {kappa}")
        self.kappa, self.eps = float(kappa), float(eps)
        self.tikhonov = torch.from_numpy(tikhonov_operator(model).matrix)  # R, (V, M)
        self.weights = np.asarray(weights, dtype=np.float64)
        self.mask = torch.as_tensor(np.asarray(model.mask, dtype=bool))
        self.geom = MaskGeometry.from_mask(self.mask)

    def __call__(self, dv: np.ndarray) -> float:
        """lambda_TV for one normalised frame (0 for a frame without data)."""
        dv = np.asarray(dv, dtype=np.float64)
        energy = float(np.mean((self.weights * dv) ** 2))
        if energy == 0.0:
            return 0.0
        with torch.no_grad():
            x = self.tikhonov @ torch.as_tensor(dv, dtype=torch.float32)
            volume = torch.zeros(self.mask.shape, dtype=torch.float32)
            volume[self.mask] = x
            tv = float(spatial_tv(volume, self.geom, self.eps))
        return self.kappa * energy / tv
