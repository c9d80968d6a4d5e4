"""The second term of Diff-INR's loss (eq. 17): TV for INR+TV, the SDS prior for Diff-INR.

Both weights scale with the frame's data: E = (1/M)‖W^½Δv‖², the data term (eq. 16) at the
empty image, so a shallow breath is not flattened by a weight set for a deep one
(`worker.recon.lambda_rule`).
- `TVRegulariser`: λ TV_ε(x) on the voxel values x = f_θ(γ(p_voxels)), λ = κ E / TV_ε(x_T)
  and ε of the project's data-scaled rule (κ 0.02 as for the TV baseline; x_T the frame's
  Tikhonov image).
- `SDSRegulariser`: λ L_SDS (eq. 14) of `count` random slices (`worker.recon.diffinr.slices`)
  through the prior's `loss` (stop-gradient residual, t from a sub-range, the weighting of the
  prior's eq. 17 inside), on images mapped to the prior's range by `prior.normalise(x, lo, hi)`
  with one range per frame (`worker.recon.diffinr.inr.frame_range`: quantiles of the Tikhonov
  image). The range must not follow the INR itself: the map's slope 2/(hi - lo) multiplies the
  SDS gradient, and the INR starts flat (hi - lo = 0). Scaling Δv by c scales the range by c
  and λ = κ E by c², so the prior's pull on x scales by c, as the data term's does: the balance
  is the same for a shallow and a deep breath.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor

from worker.recon.diffinr.inr import INR, frame_range
from worker.recon.diffinr.slices import SliceSampler
from worker.recon.finite_difference import MaskedDifference, total_variation
from worker.recon.lambda_rule import DataScaledLambda

SDS_KAPPA = 10.0  # of the sweep 1, 10, 100 on the tank (docs/diff-inr.md)
SDS_SLICES = 4


class Regulariser(Protocol):
    """λ R(f_θ) of eq. (17), weighed once per frame."""

    def weigh(self, tikhonov_image: Tensor, energy: float) -> None:
        """Set this frame's weight from its Tikhonov image and data energy E."""

    def __call__(self, inr: INR, values: Tensor) -> Tensor:
        """λ R for the INR whose voxel values are `values` (V,)."""

    @property
    def settings(self) -> dict[str, Any]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class ImagePrior(Protocol):
    """The score-distillation prior's interface (`worker.recon.diffinr.sds.SDSPrior`)."""

    def normalise(self, x: Tensor, lo: float | None = None, hi: float | None = None
                  ) -> Tensor: ...

    def loss(self, slices: Tensor, generator: torch.Generator) -> Tensor: ...


class TVRegulariser:
    """λ TV_ε(x) with the data-scaled λ and ε (module docstring)."""

    def __init__(self, difference: MaskedDifference, kappa: float) -> None:
        self.difference = difference
        self.rule = DataScaledLambda(difference, kappa)
        self.lam, self.eps = 0.0, 0.0

    def weigh(self, tikhonov_image: Tensor, energy: float) -> None:
        weights = self.rule(tikhonov_image, energy)
        self.lam, self.eps = weights.lam, weights.eps

    def __call__(self, inr: INR, values: Tensor) -> Tensor:
        return self.lam * total_variation(values, self.difference, self.eps)

    @property
    def settings(self) -> dict[str, Any]:
        return {"regulariser": "tv", "kappa": self.rule.kappa}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Stateless between frames: λ and ε are set per frame."""


class SDSRegulariser:
    """λ L_SDS on random slices of the INR (module docstring)."""

    def __init__(self, prior: ImagePrior, sampler: SliceSampler, kappa: float = SDS_KAPPA,
                 count: int = SDS_SLICES, seed: int = 0) -> None:
        if not kappa > 0:
            raise ValueError(f"kappa: must be positive, got {kappa}")
        self.prior, self.sampler = prior, sampler
        self.kappa, self.count = float(kappa), int(count)
        self.generator = torch.Generator().manual_seed(seed)
        self.lam, self.lo, self.hi = 0.0, -1.0, 1.0

    def weigh(self, tikhonov_image: Tensor, energy: float) -> None:
        self.lam = self.kappa * energy
        self.lo, self.hi = frame_range(tikhonov_image)

    def __call__(self, inr: INR, values: Tensor) -> Tensor:
        coords, masks = self.sampler.sample(self.count, self.generator)
        size = self.sampler.size
        images = (inr(coords.to(values.device)) * masks.to(values.device))
        slices = self.prior.normalise(images.reshape(self.count, 1, size, size), self.lo,
                                      self.hi)
        return self.lam * self.prior.loss(slices, self.generator)

    @property
    def settings(self) -> dict[str, Any]:
        return {"regulariser": "sds", "kappa": self.kappa, "slices": self.count,
                "slice_size": self.sampler.size, "orientations": list(self.sampler.orientations)}

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
