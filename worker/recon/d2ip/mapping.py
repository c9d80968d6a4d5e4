"""Output mapping gamma of eq. (3): sigmoid output -> signed relative conductivity change.

Delta sigma = lo + (hi - lo) * sigmoid, then the mask: voxels outside are 0 and the optimisation
variable is the V voxels inside the mask in C order of the (P, R, C) grid (`volume[mask]`).
The default range is symmetric, [-1, 1], so that sigmoid = 0.5 means "no change" and both signs
are reachable; -1 is also the physical floor of a relative change (conductivity cannot go below
zero), and a deflated-to-inflated lung (about -0.56) sits at sigmoid 0.22, far from saturation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class OutputRange:
    """[lo, hi] of Delta sigma / sigma_0; must contain 0 (lo < 0 < hi)."""

    lo: float = -1.0
    hi: float = 1.0

    def __post_init__(self) -> None:
        if not self.lo < 0.0 < self.hi:
            raise ValueError(f"output range must satisfy lo < 0 < hi, got [{self.lo}, {self.hi}]")

    @classmethod
    def symmetric(cls, half_width: float) -> OutputRange:
        """[-a, a]: sigmoid 0.5 <-> Delta sigma = 0."""
        return cls(-half_width, half_width)

    def apply(self, s: Tensor) -> Tensor:
        """gamma: values in (0, 1) -> Delta sigma in (lo, hi)."""
        return self.lo + (self.hi - self.lo) * s


def mask_indices(mask: Tensor) -> Tensor:
    """Flat C-order indices of the voxels inside a boolean (P, R, C) mask (int64, length V)."""
    return torch.nonzero(mask.reshape(-1), as_tuple=False).reshape(-1)


def to_volume(values: Tensor, mask: Tensor) -> Tensor:
    """V masked values -> (P, R, C) volume with zeros outside the mask."""
    out = torch.zeros(mask.shape, dtype=values.dtype, device=values.device)
    out[mask] = values
    return out
