"""The prior's training images: overlapping random shapes with random conductivities.

Seed 2, section 4.2: circles, rectangles, polygons (triangles included) and closed Bézier
curves, each with its own conductivity over a random background, later shapes overlapping
earlier ones; every image normalised to [-1, 1]. The seed's numeric limits are not legible in
our copy, so `ShapeSpec` holds ours. Shapes are drawn by scikit-image at `supersample` times the
resolution and averaged down, so edges carry partial-pixel values as a smooth reconstruction
does; Bézier curves are evaluated by matplotlib's path code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.path import Path
from skimage.draw import disk, polygon
from skimage.transform import downscale_local_mean

KINDS = ("circle", "rectangle", "polygon", "bezier")


@dataclass(frozen=True)
class ShapeSpec:
    """Limits of the random images (lengths as fractions of the image side)."""

    size: int = 32
    objects: tuple[int, int] = (1, 4)  # shapes per image, inclusive
    radius: tuple[float, float] = (0.1, 0.3)
    centre: tuple[float, float] = (0.15, 0.85)
    background: tuple[float, float] = (0.5, 2.0)  # conductivity, arbitrary units
    conductivity: tuple[float, float] = (0.05, 4.0)
    min_contrast: float = 0.2  # |shape - background| at least this
    supersample: int = 2


def _star_vertices(rng: np.random.Generator, count: int, radius: float) -> np.ndarray:
    """`count` points around the origin at sorted random angles: a star-convex outline."""
    angles = np.sort(rng.uniform(0.0, 2 * np.pi, count))
    radii = radius * rng.uniform(0.6, 1.0, count)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _bezier_outline(anchors: np.ndarray, points_per_piece: int = 12) -> np.ndarray:
    """A smooth closed curve of quadratic Bézier pieces: each anchor is the control point
    between the midpoints of its neighbouring edges; evaluated by matplotlib as a polygon."""
    mids = 0.5 * (anchors + np.roll(anchors, -1, axis=0))
    verts = [mids[-1]]
    for a, m in zip(anchors, mids, strict=True):
        verts += [a, m]
    path = Path(np.array(verts), [Path.MOVETO] + [Path.CURVE3] * (2 * len(anchors)))
    t = np.linspace(0.0, 1.0, points_per_piece, endpoint=False)
    return np.concatenate([piece(t) for piece, code in path.iter_bezier() if code == Path.CURVE3])


def _outline(kind: str, rng: np.random.Generator, radius: float) -> np.ndarray:
    """Vertices (x, y) around the origin of one shape of `kind` (circles are drawn directly)."""
    if kind == "rectangle":
        half = radius * rng.uniform(0.35, 1.0, 2)
        corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half
        a = rng.uniform(0.0, np.pi)
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        return corners @ rot.T
    if kind == "polygon":
        return _star_vertices(rng, int(rng.integers(3, 8)), radius)
    return _bezier_outline(_star_vertices(rng, int(rng.integers(3, 7)), radius))


def _conductivity(rng: np.random.Generator, spec: ShapeSpec, background: float) -> float:
    """A shape conductivity at least `min_contrast` away from the background."""
    while True:
        value = float(rng.uniform(*spec.conductivity))
        if abs(value - background) >= spec.min_contrast:
            return value


def shape_image(rng: np.random.Generator, spec: ShapeSpec = ShapeSpec()) -> np.ndarray:
    """One image (size x size, float32) of overlapping random shapes, normalised to [-1, 1]."""
    n = spec.size * spec.supersample
    background = float(rng.uniform(*spec.background))
    image = np.full((n, n), background)
    for _ in range(int(rng.integers(spec.objects[0], spec.objects[1] + 1))):
        kind = KINDS[int(rng.integers(len(KINDS)))]
        centre = rng.uniform(*spec.centre, 2) * n
        radius = float(rng.uniform(*spec.radius)) * n
        if kind == "circle":
            rows, cols = disk((centre[1], centre[0]), radius, shape=image.shape)
        else:
            xy = _outline(kind, rng, radius) + centre
            rows, cols = polygon(xy[:, 1], xy[:, 0], shape=image.shape)
        image[rows, cols] = _conductivity(rng, spec, background)
    image = downscale_local_mean(image, spec.supersample)
    lo, hi = image.min(), image.max()
    if hi - lo < 1e-9:  # every shape fell outside the image: a flat image
        return np.zeros((spec.size, spec.size), np.float32)
    return (2.0 * (image - lo) / (hi - lo) - 1.0).astype(np.float32)


def shape_images(count: int, seed: int, spec: ShapeSpec = ShapeSpec()) -> np.ndarray:
    """`count` images as one array (count, 1, size, size), reproducible from `seed`."""
    rng = np.random.default_rng(seed)
    return np.stack([shape_image(rng, spec) for _ in range(count)])[:, None]
