"""Declarative geometry spec: domain (thorax or cylinder), electrode rings, presets.

Torch- and gmsh-free: the API validates session requests with these models.

Patient coordinates (metres) follow DICOM LPS: +x towards the patient's left, +y posterior,
+z cranial; z = 0 is the bottom of the modelled slab. Electrodes are placed at equal arc length
around the outline, electrode 1 of each ring half a spacing to the patient's right of the
anterior midline, numbered counter-clockwise as seen from the feet (anterior -> patient's right
-> posterior -> patient's left).
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, model_validator

Numbering = Literal["planar", "zigzag", "square"]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ThoraxDomain(_Spec):
    """An adult thorax cross-section (superellipse with a spinal groove), extruded along z."""

    kind: Literal["thorax"] = "thorax"
    width: PositiveFloat = Field(0.32, description="left-right extent, m")
    depth: PositiveFloat = Field(0.22, description="anterior-posterior extent, m")
    height: PositiveFloat = Field(0.20, description="cranio-caudal extent of the slab, m")

    def outline(self, n: int = 256) -> np.ndarray:
        """n x 2 points (x, y) of the closed outline, counter-clockwise in the x-y plane."""
        t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
        c, s = np.cos(t), np.sin(t)
        e = 2.0 / 2.6  # superellipse exponent 2.6: squarer than an ellipse, like a ribcage
        x = np.sign(c) * np.abs(c) ** e
        y = np.sign(s) * np.abs(s) ** e
        x = x * (1.0 - 0.10 * np.clip(-y, 0.0, None) ** 2)  # anterior chest narrows
        y = y - 0.12 * np.exp(-((x / 0.14) ** 2)) * np.clip(y, 0.0, None) ** 4  # spinal groove
        return np.column_stack([0.5 * self.width * x, 0.5 * self.depth * y])


class CylinderDomain(_Spec):
    """A cylindrical saline tank."""

    kind: Literal["cylinder"] = "cylinder"
    radius: PositiveFloat = Field(0.14, description="m")
    height: PositiveFloat = Field(0.20, description="m")

    @property
    def width(self) -> float:
        return 2.0 * self.radius

    @property
    def depth(self) -> float:
        return 2.0 * self.radius

    def outline(self, n: int = 256) -> np.ndarray:
        t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
        return self.radius * np.column_stack([np.cos(t), np.sin(t)])


MAX_OUTLINE_POINTS = 256
MAX_OUTLINE_COORDINATE = 2.0  # m: a CT slice's coordinates may sit off the body's centre


class OutlineDomain(_Spec):
    """A cross-section given as a closed polygon (e.g. traced on a CT slice), extruded along z.

    `points` are (x, y) in metres in patient coordinates (LPS: +x left, +y posterior), in either
    orientation; the polygon is centred on its bounding box, oriented counter-clockwise and
    resampled at equal arc length by `outline`, so it must not cross itself."""

    kind: Literal["outline"] = "outline"
    points: tuple[tuple[float, float], ...] = Field(
        min_length=8, max_length=MAX_OUTLINE_POINTS, description="(x, y) vertices, m")
    height: PositiveFloat = Field(0.20, description="cranio-caudal extent of the slab, m")

    @model_validator(mode="after")
    def _simple(self) -> OutlineDomain:
        pts = np.asarray(self.points, dtype=float)
        if not (np.isfinite(pts).all() and np.abs(pts).max() <= MAX_OUTLINE_COORDINATE):
            raise ValueError(f"domain.points: every coordinate must be finite, within "
                             f"±{MAX_OUTLINE_COORDINATE} m")
        if _crosses_itself(pts):
            raise ValueError("domain.points: the outline crosses itself")
        if abs(_signed_area(pts)) < 1e-6:
            raise ValueError("domain.points: the outline encloses no area")
        return self

    @cached_property
    def _centred(self) -> np.ndarray:
        pts = np.asarray(self.points, dtype=float)
        pts = pts - 0.5 * (pts.min(axis=0) + pts.max(axis=0))
        return pts if _signed_area(pts) > 0 else pts[::-1]

    @property
    def width(self) -> float:
        return float(np.ptp(self._centred[:, 0]))

    @property
    def depth(self) -> float:
        return float(np.ptp(self._centred[:, 1]))

    def outline(self, n: int = 256) -> np.ndarray:
        """n x 2 points at equal arc length along the polygon, counter-clockwise."""
        pts = self._centred
        arc = arc_coordinates(pts)
        total = outline_perimeter(pts)
        s = np.linspace(0.0, total, n, endpoint=False)
        closed_arc = np.append(arc, total)
        closed = np.vstack([pts, pts[:1]])
        return np.column_stack([np.interp(s, closed_arc, closed[:, 0]),
                                np.interp(s, closed_arc, closed[:, 1])])


def _signed_area(pts: np.ndarray) -> float:
    """Shoelace area, positive for a counter-clockwise polygon."""
    x, y = pts[:, 0], pts[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def _crosses_itself(pts: np.ndarray) -> bool:
    """True when two non-adjacent edges of the closed polygon properly intersect: edge j's ends
    lie on both sides of edge i's line and vice versa (every pair at once, n x n)."""
    a, b = pts, np.roll(pts, -1, axis=0)
    d = b - a
    c = d[:, 0] * a[:, 1] - d[:, 1] * a[:, 0]

    def side(p: np.ndarray) -> np.ndarray:  # [i, j]: p_j relative to edge i's line
        return np.outer(d[:, 0], p[:, 1]) - np.outer(d[:, 1], p[:, 0]) - c[:, None]

    split = side(a) * side(b) < 0
    cross = split & split.T
    n = len(pts)
    gap = np.abs(np.subtract.outer(np.arange(n), np.arange(n)))
    return bool((cross & (gap > 1) & (gap < n - 1)).any())


Domain = Annotated[ThoraxDomain | CylinderDomain | OutlineDomain, Field(discriminator="kind")]


class ElectrodeSpec(_Spec):
    """Rectangular electrodes in one or two horizontal rings."""

    per_ring: PositiveInt = Field(16, description="electrodes in each ring")
    ring_heights: tuple[float, ...] = Field(
        (0.07, 0.13), description="z of each ring's centre above the slab bottom, m (1 or 2)")
    width: PositiveFloat = Field(0.02, description="along the boundary, m")
    height: PositiveFloat = Field(0.02, description="along z, m")
    contact_impedance: PositiveFloat = Field(0.01, description="ohm m^2")
    numbering: Numbering = Field("square", description="order of electrodes across two rings")

    @model_validator(mode="after")
    def _rings(self) -> ElectrodeSpec:
        if not 1 <= len(self.ring_heights) <= 2:
            raise ValueError("electrodes.ring_heights: give one or two rings")
        if self.per_ring < 4:
            raise ValueError("electrodes.per_ring: at least 4 electrodes per ring")
        if len(self.ring_heights) == 2:
            gap = abs(self.ring_heights[1] - self.ring_heights[0])
            if gap < self.height:
                raise ValueError(
                    f"electrodes.ring_heights: rings {gap:.4f} m apart overlap electrodes of "
                    f"height {self.height} m")
        return self

    @property
    def n_rings(self) -> int:
        return len(self.ring_heights)

    @property
    def count(self) -> int:
        return self.per_ring * self.n_rings


class GeometrySpec(_Spec):
    """Everything that fixes the mesh and the electrodes; loadable from YAML or JSON."""

    domain: Domain = Field(default_factory=ThoraxDomain)
    electrodes: ElectrodeSpec = Field(default_factory=ElectrodeSpec)
    background_conductivity: PositiveFloat = Field(0.24, description="S/m")
    current_amplitude: PositiveFloat = Field(1e-3, description="injected current, A")
    mesh_size: PositiveFloat = Field(
        0.009, description="target tetrahedron edge length, m (refined 3x at electrodes)")

    @model_validator(mode="after")
    def _fits(self) -> GeometrySpec:
        el, dom = self.electrodes, self.domain
        for k, z in enumerate(el.ring_heights):
            if z - el.height / 2 < 0 or z + el.height / 2 > dom.height:
                raise ValueError(
                    f"electrodes.ring_heights[{k}]: ring at z={z} m with electrode height "
                    f"{el.height} m lies outside the domain (0..{dom.height} m)")
        perimeter = outline_perimeter(dom.outline(1024))
        spacing = perimeter / el.per_ring
        if el.width >= spacing:
            raise ValueError(
                f"electrodes.width: {el.per_ring} electrodes of width {el.width} m overlap on a "
                f"perimeter of {perimeter:.3f} m (spacing {spacing:.4f} m)")
        if self.mesh_size > min(dom.height, dom.width, dom.depth) / 2:
            raise ValueError(f"mesh_size: {self.mesh_size} m is too coarse for the domain")
        return self

    @cached_property
    def _placement(self) -> tuple[np.ndarray, np.ndarray]:
        return electrode_placement(self)

    @property
    def electrode_arc(self) -> np.ndarray:
        """Arc-length position of each electrode's centre along the outline, in numbering order."""
        return self._placement[0]

    @property
    def electrode_z(self) -> np.ndarray:
        """z of each electrode's centre, in numbering order."""
        return self._placement[1]


def outline_perimeter(points: np.ndarray) -> float:
    closed = np.vstack([points, points[:1]])
    return float(np.linalg.norm(np.diff(closed, axis=0), axis=1).sum())


def arc_coordinates(points: np.ndarray) -> np.ndarray:
    """Cumulative arc length at each outline point, starting at 0 at the first point."""
    seg = np.linalg.norm(np.diff(np.vstack([points, points[:1]]), axis=0), axis=1)
    return np.concatenate([[0.0], np.cumsum(seg)[:-1]])


def anterior_midline_arc(points: np.ndarray) -> float:
    """Arc length of the outline point on the anterior midline (x = 0, y < 0)."""
    arc = arc_coordinates(points)
    front = np.where(points[:, 1] < 0)[0]
    return float(arc[front[np.argmin(np.abs(points[front, 0]))]])


def ring_order(per_ring: int, n_rings: int, numbering: Numbering) -> list[tuple[int, int]]:
    """(ring, position) of each electrode number.

    planar: ring 1 positions 0..n-1, then ring 2; zigzag: alternate rings at each position;
    square: 1 lower, 2 upper, 3 upper-next, 4 lower-next, ... (Grychtol et al. 2019).
    """
    if n_rings == 1:
        return [(0, j) for j in range(per_ring)]
    if numbering == "planar":
        return [(r, j) for r in range(2) for j in range(per_ring)]
    if numbering == "zigzag":
        return [(r, j) for j in range(per_ring) for r in range(2)]
    order = []
    for j in range(per_ring):
        rings = (0, 1) if j % 2 == 0 else (1, 0)
        order += [(r, j) for r in rings]
    return order


def electrode_placement(spec: GeometrySpec) -> tuple[np.ndarray, np.ndarray]:
    """Arc-length and z of every electrode centre, in numbering order.

    Arc length runs counter-clockwise in the x-y plane from the outline's first point; position
    j of a ring sits at (anterior midline) - (j + 1/2) spacing, i.e. towards the patient's right
    first, which is counter-clockwise as seen from the feet.
    """
    el = spec.electrodes
    pts = spec.domain.outline(1024)
    perimeter = outline_perimeter(pts)
    start = anterior_midline_arc(pts)
    spacing = perimeter / el.per_ring
    arcs, zs = [], []
    for ring, j in ring_order(el.per_ring, el.n_rings, el.numbering):
        arcs.append((start - (j + 0.5) * spacing) % perimeter)
        zs.append(el.ring_heights[ring])
    return np.asarray(arcs), np.asarray(zs)


def _single_ring(z: float) -> dict[str, Any]:
    return {"ring_heights": (z,)}


GEOMETRY_PRESETS: dict[str, dict[str, Any]] = {
    "thorax-2x16": {},
    "thorax-1x32": {"electrodes": {"per_ring": 32, **_single_ring(0.10)}},
    "thorax-1x16": {"electrodes": {"per_ring": 16, **_single_ring(0.10)}},
    "cylinder-2x16": {"domain": {"kind": "cylinder"}},
    "cylinder-1x32": {"domain": {"kind": "cylinder"},
                      "electrodes": {"per_ring": 32, **_single_ring(0.10)}},
    "cylinder-1x16": {"domain": {"kind": "cylinder"},
                      "electrodes": {"per_ring": 16, **_single_ring(0.10)}},
}
DEFAULT_GEOMETRY = "thorax-2x16"


def load_spec_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON spec file into a dict."""
    text = Path(path).read_text()
    data = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a spec file must hold a mapping")
    return data


def resolve_geometry(value: Any = None) -> GeometrySpec:
    """A GeometrySpec from None (default preset), a preset name, a YAML/JSON path, or a dict.

    A dict may name a preset under the key "preset" and override its fields.
    """
    if isinstance(value, GeometrySpec):
        return value
    if value is None:
        value = DEFAULT_GEOMETRY
    if isinstance(value, (str, Path)):
        name = str(value)
        if name in GEOMETRY_PRESETS:
            return GeometrySpec.model_validate(GEOMETRY_PRESETS[name])
        if Path(name).is_file():
            return resolve_geometry(load_spec_file(name))
        raise ValueError(
            f"geometry: unknown preset or file {name!r}; presets: {', '.join(GEOMETRY_PRESETS)}")
    if isinstance(value, dict):
        value = dict(value)
        preset = value.pop("preset", None)
        if preset is not None:
            if preset not in GEOMETRY_PRESETS:
                raise ValueError(f"geometry.preset: unknown preset {preset!r}")
            value = _merge(GEOMETRY_PRESETS[preset], value)
        return GeometrySpec.model_validate(value)
    raise TypeError(f"geometry: cannot build a spec from {type(value).__name__}")


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
