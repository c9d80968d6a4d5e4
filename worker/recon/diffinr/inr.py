"""The implicit neural representation of Diff-INR: an MLP of random-Fourier-encoded coordinates.

- eq. (4): γ(p) = [cos(2π B p), sin(2π B p)], B ∈ R^{m x d} drawn from N(0, σ²) once per
  network (σ from eq. 18, `worker.recon.diffinr.bandwidth`), not trained;
- eq. (15): Δσ/σ0(p) = s · f_θ(γ(p)), f_θ four fully connected layers of 128 neurons (ReLU) and
  a linear output, trained by Adam at lr 0.01 (section 4.4).

s is the frame's unit of Δσ/σ0 (`frame_range`: half the range of its Tikhonov image), not
trained. Adam's steps have a fixed size in θ, so without s the same lr moves the image by the
same amount on a frame whose change is 0.02 (the first frames of an edema) as on one whose change
is 1 (a tank's insulator): on the small one the first steps overshoot it many times, and the
fit kills the last layer's units to undo that (99 % dead on the first frame of `edema-left`, a
flat image; docs/diff-inr.md, "Thorax"). With s the fit of c Δv is the fit of Δv times c, step
for step (Adam's update does not depend on the gradient's scale), like the weights of
`worker.recon.diffinr.regularisers`. The seed's absolute images have a fixed scale and need no s.

Coordinates are normalised to the seed's domain [-1, 1]: one scale for all three axes (half
the larger in-plane extent), centred on the domain's axis and mid-height, so the bandwidth is
isotropic in metres and the thorax keeps its aspect ratio (`DomainFrame`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from service.contract.geometry import GeometrySpec
from service.contract.grid import GridSpec, voxel_edges

WIDTH = 128  # neurons per layer (section 4.4)
DEPTH = 4  # fully connected layers of WIDTH (section 4.4)
FEATURES = 128  # m, rows of B: the encoding has 2m entries
# Adam's step (section 4.4); `inr-tv` takes its own (`worker.recon.diffinr.methods`).
LEARNING_RATE = 0.01
RANGE_QUANTILE = 0.01


def frame_range(tikhonov_image: Tensor) -> tuple[float, float]:
    """The frame's range of Δσ/σ0 (lo, hi): the RANGE_QUANTILE and 1 - RANGE_QUANTILE quantiles
    of its Tikhonov image, widened to hold 0 (the background); s = (hi - lo) / 2 is the INR's
    output unit, and the SDS prior maps [lo, hi] to its [-1, 1]."""
    low, high = torch.quantile(tikhonov_image.float(),
                               torch.tensor([RANGE_QUANTILE, 1.0 - RANGE_QUANTILE])).tolist()
    return min(low, 0.0), max(high, 0.0)


@dataclass(frozen=True)
class DomainFrame:
    """The affine map from patient coordinates (m) to the normalised domain: p̂ = (p - c) / s."""

    centre: tuple[float, float, float]
    scale: float

    @classmethod
    def of(cls, geometry: GeometrySpec) -> DomainFrame:
        dom = geometry.domain
        return cls((0.0, 0.0, dom.height / 2), max(dom.width, dom.depth) / 2)

    def normalise(self, points: np.ndarray) -> np.ndarray:
        """(n, 3) metres -> (n, 3) normalised."""
        return (np.asarray(points, dtype=float) - np.asarray(self.centre)) / self.scale


def voxel_centres(geometry: GeometrySpec, grid: GridSpec, mask: np.ndarray) -> np.ndarray:
    """(V, 3) (x, y, z) in metres of the masked voxels' centres, in the C order of the mask."""
    dom = geometry.domain
    ze, ye, xe = voxel_edges(grid, dom.width, dom.depth, dom.height)
    zc, yc, xc = (0.5 * (e[1:] + e[:-1]) for e in (ze, ye, xe))
    zz, yy, xx = np.meshgrid(zc, yc, xc, indexing="ij")
    return np.column_stack([xx[mask], yy[mask], zz[mask]])


class FourierFeatures(nn.Module):
    """γ(p) of eq. (4) with a fixed Gaussian B (a buffer: saved, never trained)."""

    def __init__(self, dims: int, sigma: float, features: int = FEATURES,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.sigma = float(sigma)
        self.register_buffer("b", sigma * torch.randn(features, dims, generator=generator))

    @property
    def out_features(self) -> int:
        return 2 * int(self.b.shape[0])

    def forward(self, p: Tensor) -> Tensor:
        angle = 2.0 * math.pi * p @ self.b.T
        return torch.cat([angle.cos(), angle.sin()], dim=-1)


class INR(nn.Module):
    """s · f_θ(γ(p)) of eq. (15): (n, d) normalised coordinates -> (n,) Δσ/σ0 (s: `rescale`)."""

    def __init__(self, dims: int, sigma: float, seed: int = 0, features: int = FEATURES,
                 width: int = WIDTH, depth: int = DEPTH) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.encoding = FourierFeatures(dims, sigma, features, generator)
        layers: list[nn.Module] = []
        size = self.encoding.out_features
        for _ in range(depth):
            layers += [nn.Linear(size, width), nn.ReLU()]
            size = width
        layers.append(nn.Linear(size, 1))
        self.mlp = nn.Sequential(*layers)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for layer in self.mlp:
                if isinstance(layer, nn.Linear):
                    layer.reset_parameters()
            last = self.mlp[-1]
            assert isinstance(last, nn.Linear)
            nn.init.zeros_(last.weight)  # start from the empty image Δσ = 0
            nn.init.zeros_(last.bias)
        self.scale = 1.0

    def rescale(self, scale: float) -> None:
        """Set the output unit s to `scale` (> 0) without changing the function: the linear
        output layer is multiplied by old / new s (a carried network keeps its image)."""
        if not scale > 0:
            raise ValueError(f"scale: must be positive, got {scale}")
        last = self.mlp[-1]
        assert isinstance(last, nn.Linear)
        with torch.no_grad():
            last.weight.mul_(self.scale / scale)
            last.bias.mul_(self.scale / scale)
        self.scale = float(scale)

    def forward(self, p: Tensor) -> Tensor:
        return self.scale * self.mlp(self.encoding(p)).squeeze(-1)
