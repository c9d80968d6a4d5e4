"""A breathing thorax phantom: two tapered lungs, a heart between them, an optional spine.

Shapes are set relative to the domain's width, depth and height, so the same phantom fits the
thorax and the cylinder. Each lung is, at full inspiration, a superelliptic cross-section
(exponent 2.5) whose semi-axes taper towards the apex as sqrt(1 - ζ^2.2) (ζ = 0 at the base,
1 at the apex): broad bases on the diaphragm, rounded apices. The right lung (patient's right,
-x) is slightly larger; the left one leaves room for the heart. Breathing scales each lung
isotropically about its centre (as in D2IP, IV.A) by s = (V/V_max)^(1/3), so its volume is
s^3 times the full-inspiration volume. The heart (an ellipsoid, anterior and slightly left)
takes precedence over the lungs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.contract.geometry import GeometrySpec


@dataclass(frozen=True)
class BreathState:
    """One instant: lung volume (fraction of full inspiration), tissue conductivities (S/m)."""

    volume: float
    lung_sigma: float
    heart_sigma: float


@dataclass(frozen=True)
class Lung:
    centre: np.ndarray  # (x, y, z) of isotropic scaling, m
    semi_axes: np.ndarray  # (ax, ay) at the base, m
    base: float  # z of the base, m
    apex: float  # z of the apex, m

    def contains(self, pts: np.ndarray, scale: float) -> np.ndarray:
        """Points inside the lung scaled by `scale` about its centre."""
        q = self.centre + (pts - self.centre) / scale
        zeta = (q[:, 2] - self.base) / (self.apex - self.base)
        taper = np.sqrt(np.clip(1.0 - np.clip(zeta, 0.0, None) ** 2.2, 0.0, None))
        ax, ay = self.semi_axes[0] * taper, self.semi_axes[1] * taper
        with np.errstate(divide="ignore", invalid="ignore"):
            r = (np.abs((q[:, 0] - self.centre[0]) / ax) ** 2.5
                 + np.abs((q[:, 1] - self.centre[1]) / ay) ** 2.5)
        return (zeta >= 0) & (zeta <= 1) & (taper > 0) & (r <= 1.0)


@dataclass(frozen=True)
class Phantom:
    background: float
    right: Lung
    left: Lung
    heart_centre: np.ndarray
    heart_axes: np.ndarray
    spine_sigma: float | None = None  # None: no spine
    spine_centre: tuple[float, float] = (0.0, 0.0)
    spine_radius: float = 0.0
    edema_left_dorsal: float | None = None  # left-lung points with y above this keep background

    def heart(self, pts: np.ndarray) -> np.ndarray:
        return (((pts - self.heart_centre) / self.heart_axes) ** 2).sum(axis=1) <= 1.0

    def lungs(self, pts: np.ndarray, state: BreathState) -> tuple[np.ndarray, np.ndarray]:
        """Masks of (right, left) lung at this state, outside the heart."""
        s = float(state.volume) ** (1.0 / 3.0)
        not_heart = ~self.heart(pts)
        return self.right.contains(pts, s) & not_heart, self.left.contains(pts, s) & not_heart

    def conductivity(self, pts: np.ndarray, state: BreathState) -> np.ndarray:
        """Absolute conductivity (S/m) at each point (n x 3)."""
        sigma = np.full(pts.shape[0], self.background)
        right, left = self.lungs(pts, state)
        sigma[right | left] = state.lung_sigma
        if self.edema_left_dorsal is not None:
            s = float(state.volume) ** (1.0 / 3.0)
            dorsal = self.left.centre[1] + (pts[:, 1] - self.left.centre[1]) / s
            sigma[left & (dorsal > self.edema_left_dorsal)] = self.background
        sigma[self.heart(pts)] = state.heart_sigma
        if self.spine_sigma is not None:
            d = np.hypot(pts[:, 0] - self.spine_centre[0], pts[:, 1] - self.spine_centre[1])
            sigma[d <= self.spine_radius] = self.spine_sigma
        return sigma


def thorax_phantom(geometry: GeometrySpec, edema: bool = False, spine: bool = False) -> Phantom:
    """The phantom scaled to the geometry's domain (half-width a, half-depth b, height H)."""
    dom = geometry.domain
    a, b, h = dom.width / 2, dom.depth / 2, dom.height
    base, apex = 0.05 * h, 0.97 * h
    zc = base + 0.35 * (apex - base)
    right = Lung(centre=np.array([-0.47 * a, 0.05 * b, zc]),
                 semi_axes=np.array([0.40 * a, 0.68 * b]), base=base, apex=apex)
    left = Lung(centre=np.array([0.47 * a, 0.08 * b, zc]),
                semi_axes=np.array([0.36 * a, 0.64 * b]), base=base, apex=apex)
    return Phantom(
        background=geometry.background_conductivity, right=right, left=left,
        heart_centre=np.array([0.10 * a, -0.38 * b, 0.30 * h]),
        heart_axes=np.array([0.30 * a, 0.36 * b, 0.28 * h]),
        spine_sigma=0.04 if spine else None, spine_centre=(0.0, 0.80 * b),
        spine_radius=0.10 * b,
        edema_left_dorsal=left.centre[1] + 0.15 * b if edema else None,
    )
