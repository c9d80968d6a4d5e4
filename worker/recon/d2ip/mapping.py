"""Output mapping gamma of eq. (3): sigmoid output -> signed relative conductivity change.

Delta sigma = lo + (hi - lo) * sigmoid, then the mask: voxels outside are 0 and the optimisation
variable is the V voxels inside the mask in C order of the (P, R, C) grid (`volume[mask]`).
The default range is symmetric, [-1, 1], so that sigmoid = 0.5 means "no change" and both signs
are reachable; -1 is also the physical floor of a relative change (conductivity cannot go below
zero), and a deflated-to-inflated lung (about -0.56) sits at sigmoid 0.22, far from saturation.

A range is fixed (`OutputRange`) or taken from each frame's data (`DataRange`, beyond the paper):
[-a_i, a_i] with a_i = margin * max |x_L,i|, x_L,i the frame's linear (Tikhonov) image. A real
tank holds plastic near -1 and metal above +1, a tidal difference of a neonate 0.15: a constant
tuned on one simulated case clips the first and wastes the sigmoid's resolution on the second.
With the range following the data the network's output is the image's shape relative to the
frame's amplitude, so a warm start made on a frame of another amplitude starts at the new
frame's amplitude (docs/d2ip.md, "Output mapping").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from worker.recon.tikhonov import tikhonov_operator

if TYPE_CHECKING:
    from worker.forward.model import ForwardModel

FrameRange = Callable[[np.ndarray], "OutputRange"]


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

    def bind(self, model: ForwardModel) -> FrameRange:
        """The same range for every frame."""
        return lambda dv: self

    def settings(self) -> list[float]:
        """What the range adds to the settings and the warm-start key."""
        return [self.lo, self.hi]


@dataclass(frozen=True)
class DataRange:
    """[-a_i, a_i] per frame, a_i = max(margin * max |x_L,i|, floor), x_L,i the frame's
    Tikhonov image (the project's preview, `worker.recon.tikhonov`) of the normalised frame."""

    name: ClassVar[str] = "data"
    margin: float = 2.0
    floor: float = 1e-3  # a frame without data still gets a valid range (lo < 0 < hi)

    def __post_init__(self) -> None:
        if not (self.margin > 0 and self.floor > 0):
            raise ValueError(f"data range: margin and floor must be positive, got {self}")

    def bind(self, model: ForwardModel) -> FrameRange:
        """Normalised frame Delta v -> its range."""
        linear = torch.from_numpy(tikhonov_operator(model).matrix)  # (V, M)

        def frame_range(dv: np.ndarray) -> OutputRange:
            with torch.no_grad():
                peak = float((linear @ torch.as_tensor(dv, dtype=torch.float32)).abs().max())
            return OutputRange.symmetric(max(self.floor, self.margin * peak))

        return frame_range

    def settings(self) -> dict[str, Any]:
        return {"rule": self.name, "margin": self.margin, "floor": self.floor}


RangeRule = OutputRange | DataRange


def mask_indices(mask: Tensor) -> Tensor:
    """Flat C-order indices of the voxels inside a boolean (P, R, C) mask (int64, length V)."""
    return torch.nonzero(mask.reshape(-1), as_tuple=False).reshape(-1)


def to_volume(values: Tensor, mask: Tensor) -> Tensor:
    """V masked values -> (P, R, C) volume with zeros outside the mask."""
    out = torch.zeros(mask.shape, dtype=values.dtype, device=values.device)
    out[mask] = values
    return out
