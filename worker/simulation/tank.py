"""A saline tank with extruded shape inclusions, like the tank experiments of the Diff-INR seed
(section 4.1: a 28 cm tank, 16 electrodes, plastic triangles, rectangles and circles of
23-31 cm²).

Three inclusions run through the whole height of the cylinder (extruded prisms), so every
axial plane holds the same picture and the electrode plane is the one to score:
- a triangle (equilateral, 31.3 cm², the seed's large triangle), less conductive than saline;
- a rectangle (7.0 x 4.1 cm, 28.7 cm², the seed's rectangle), more conductive (2 x saline);
- a circle (30.2 cm², the seed's circle), less conductive.
"Less conductive" is plastic-like, `INSULATOR` x saline (not zero, which the FEM cannot take).
Positions scale with the domain's radius, so the layout fits any cylinder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from matplotlib.path import Path as PolyPath

from service.contract.geometry import CylinderDomain, GeometrySpec
from worker.simulation.phantom import BreathState

INSULATOR = 0.01  # conductivity of a "plastic" inclusion, as a fraction of the saline's
CONDUCTOR = 2.0  # conductivity of the conductive inclusion, as a multiple of the saline's
SEED_RADIUS = 0.14  # m: the seed's tank; the layout below is in these units, then scaled

Shape = Literal["triangle", "rectangle", "circle"]


@dataclass(frozen=True)
class Inclusion:
    """One extruded inclusion: a polygon or a circle in the x-y plane, its conductivity."""

    name: str
    shape: Shape
    sigma: float  # S/m
    vertices: np.ndarray | None = None  # (n, 2), m, for polygons
    centre: tuple[float, float] = (0.0, 0.0)  # m, for circles
    radius: float = 0.0  # m, for circles

    def contains(self, xy: np.ndarray) -> np.ndarray:
        """(n,) bool: the points (n, 2+) whose x-y lies inside the shape."""
        if self.shape == "circle":
            return np.hypot(xy[:, 0] - self.centre[0], xy[:, 1] - self.centre[1]) <= self.radius
        return PolyPath(self.vertices).contains_points(xy[:, :2])

    @property
    def area(self) -> float:
        """m², exact for the shape."""
        if self.shape == "circle":
            return float(np.pi * self.radius**2)
        x, y = self.vertices[:, 0], self.vertices[:, 1]
        return float(0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _equilateral(centre: tuple[float, float], area: float, angle: float) -> np.ndarray:
    """Vertices of an equilateral triangle of this area about its centroid."""
    circumradius = np.sqrt(4.0 * area / np.sqrt(3.0)) / np.sqrt(3.0)
    t = angle + np.array([0.0, 2.0, 4.0]) * np.pi / 3.0
    return np.column_stack([centre[0] + circumradius * np.cos(t),
                            centre[1] + circumradius * np.sin(t)])


def _rectangle(centre: tuple[float, float], width: float, height: float) -> np.ndarray:
    cx, cy = centre
    return np.array([[cx - width / 2, cy - height / 2], [cx + width / 2, cy - height / 2],
                     [cx + width / 2, cy + height / 2], [cx - width / 2, cy + height / 2]])


@dataclass(frozen=True)
class TankPhantom:
    """Saline at the background conductivity with extruded inclusions (static: the breath
    state of the simulator's timeline is ignored)."""

    background: float
    inclusions: tuple[Inclusion, ...]

    def conductivity(self, pts: np.ndarray, state: BreathState | None = None) -> np.ndarray:
        """Absolute conductivity (S/m) at each point (n x 3)."""
        sigma = np.full(pts.shape[0], self.background)
        for inclusion in self.inclusions:
            sigma[inclusion.contains(pts)] = inclusion.sigma
        return sigma


def tank_phantom(geometry: GeometrySpec) -> TankPhantom:
    """The three-inclusion layout (module docstring) in the geometry's cylinder."""
    if not isinstance(geometry.domain, CylinderDomain):
        raise ValueError("case tank-shapes: needs a cylinder geometry (e.g. cylinder-1x32)")
    s = geometry.domain.radius / SEED_RADIUS
    bg = geometry.background_conductivity
    cm2 = 1e-4 * s**2
    triangle = Inclusion("triangle", "triangle", INSULATOR * bg,
                         vertices=_equilateral((-0.060 * s, -0.045 * s), 31.29 * cm2, np.pi / 2))
    rectangle = Inclusion("rectangle", "rectangle", CONDUCTOR * bg,
                          vertices=_rectangle((0.060 * s, -0.035 * s), 0.070 * s, 0.041 * s))
    circle = Inclusion("circle", "circle", INSULATOR * bg, centre=(0.0, 0.070 * s),
                       radius=float(np.sqrt(30.19 * cm2 / np.pi)))
    return TankPhantom(bg, (triangle, rectangle, circle))
