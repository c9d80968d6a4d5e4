"""The implicit neural representation of Diff-INR: an MLP of random-Fourier-encoded coordinates.

- eq. (4): γ(p) = [cos(2π B p), sin(2π B p)], B ∈ R^{m x d} drawn from N(0, σ²) once per
  network (σ from eq. 18, `worker.recon.diffinr.bandwidth`), not trained;
- eq. (15): Δσ/σ0(p) = f_θ(γ(p)), f_θ four fully connected layers of 128 neurons (ReLU) and a
  linear output, trained by Adam at lr 0.01 (section 4.4).

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
LEARNING_RATE = 0.01  # Adam (section 4.4)


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
    """f_θ(γ(p)) of eq. (15): (n, d) normalised coordinates -> (n,) Δσ/σ0."""

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

    def forward(self, p: Tensor) -> Tensor:
        return self.mlp(self.encoding(p)).squeeze(-1)
