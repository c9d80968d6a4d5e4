"""Regional ventilation of one tidal image, in 3D.

Inputs: a tidal image (P, R, C) in the clinical sign (impedance rises on inspiration: the
end-inspiration minus the start-of-inspiration voxel impedance, -Δσ/σ0), the lung region
(`worker.ventilation.lung_mask`) and the voxels' place in patient space (`VoxelSpace`, DICOM
LPS). Voxels with a negative tidal change (out of phase) count as zero ventilation in the
shares, the centre of ventilation and the GI index.

Definitions (TREND consensus, Frerichs et al., Thorax 2017, unless stated):
- shares in % of the lung's summed tidal change: left/right of the midline x = 0; four
  ventral-to-dorsal layers of equal height over the lung's extent along y; quadrants (midline
  x = 0, middle of the lung's y extent); caudal/cranial halves of the lung's z extent and each
  plane (3D); the plane of each electrode ring (what a 2D monitor at that ring sees). A voxel
  that straddles a boundary is shared by the fraction of its width on each side;
- centre of ventilation x, y, z: the tidal-weighted mean voxel position, in % of the lung's
  extent along each axis (0 % = right, ventral, caudal edge; 100 % = left, dorsal, cranial);
- global inhomogeneity index (Zhao et al., Intensive Care Med 2009):
  GI = Σ_lung |TIV_v - median_lung(TIV)| / Σ_lung TIV_v;
- dependent / non-dependent shares: the lung's tidal change in the half of the lung's extent
  along gravity that lies downwards (dependent) or upwards; the centre of ventilation along
  gravity, 0 % at the non-dependent edge and 100 % at the dependent one (supine: the dorsal
  share and cov_y; prone: the ventral share and 100 - cov_y; lateral: along x);
- silent spaces (Ukere et al., Crit Care 2016): lung voxels whose tidal change is under 10 % of
  the breath's largest, in % of the lung voxels; dependent when they lie beyond the centre of
  ventilation along gravity, non-dependent otherwise. Gravity follows the patient's position
  (`GRAVITY`, supine by default);
- regional ventilation delay (Wrigge et al., Crit Care 2008; Muders et al., Crit Care Med
  2012): for each voxel, the time from the start of inspiration until its impedance first
  reaches 40 % of its rise over the inspiration, in % of the inspiration time; its spread
  (RVDI) is the standard deviation over the lung voxels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from worker.ventilation.space import VoxelSpace

SILENT_FRACTION = 0.10
RVD_THRESHOLD = 0.40
# unit vector of gravity in patient coordinates (LPS: +x left, +y posterior, +z cranial)
GRAVITY = {
    "supine": (0.0, 1.0, 0.0),
    "prone": (0.0, -1.0, 0.0),
    "left-lateral": (1.0, 0.0, 0.0),  # lying on the left side
    "right-lateral": (-1.0, 0.0, 0.0),
    "upright": (0.0, 0.0, -1.0),
}


@dataclass(frozen=True)
class RingPlane:
    """The plane of one electrode ring: its height, index, and the share it holds."""

    z_m: float
    plane: int
    pct: float  # of the whole lung's tidal change
    left_pct: float  # within the plane
    right_pct: float


@dataclass(frozen=True)
class Regional:
    """Regional parameters of one tidal image (percentages unless named otherwise)."""

    left_pct: float
    right_pct: float
    layer_pct: tuple[float, float, float, float]  # ventral -> dorsal
    quadrant_pct: dict[str, float]  # ventral_right, ventral_left, dorsal_right, dorsal_left
    caudal_pct: float
    cranial_pct: float
    plane_pct: tuple[float, ...]  # bottom -> top
    ring_planes: tuple[RingPlane, ...]
    cov_x_pct: float
    cov_y_pct: float
    cov_z_pct: float
    gi: float  # dimensionless
    silent_pct: float
    silent_dependent_pct: float
    silent_nondependent_pct: float
    dependent_pct: float = float("nan")  # along gravity (`position`)
    nondependent_pct: float = float("nan")
    cov_gravity_pct: float = float("nan")  # 0 % non-dependent edge, 100 % dependent edge

    def scalars(self) -> dict[str, float]:
        """The scalar parameters, ventral = layers 1 + 2 and dorsal = layers 3 + 4."""
        return {"left_pct": self.left_pct, "right_pct": self.right_pct,
                "ventral_pct": self.layer_pct[0] + self.layer_pct[1],
                "dorsal_pct": self.layer_pct[2] + self.layer_pct[3],
                "caudal_pct": self.caudal_pct, "cranial_pct": self.cranial_pct,
                "cov_x_pct": self.cov_x_pct, "cov_y_pct": self.cov_y_pct,
                "cov_z_pct": self.cov_z_pct, "gi": self.gi, "silent_pct": self.silent_pct,
                "silent_dependent_pct": self.silent_dependent_pct,
                "silent_nondependent_pct": self.silent_nondependent_pct,
                "dependent_pct": self.dependent_pct, "nondependent_pct": self.nondependent_pct,
                "cov_gravity_pct": self.cov_gravity_pct}


def _overlap(centres: np.ndarray, step: float, low: float, high: float) -> np.ndarray:
    """Fraction of each voxel [c - step/2, c + step/2] that lies within [low, high]."""
    inside = np.minimum(high, centres + step / 2) - np.maximum(low, centres - step / 2)
    return np.clip(inside / step, 0.0, 1.0)


def _extent(mask: np.ndarray, centres: np.ndarray, step: float, axis: int) -> tuple[float, float]:
    """(low, high) edges of the mask's voxels along `axis` (0 P, 1 R, 2 C)."""
    other = tuple(a for a in range(3) if a != axis)
    used = np.flatnonzero(mask.any(axis=other))
    return float(centres[used[0]] - step / 2), float(centres[used[-1]] + step / 2)


def _pct(part: float, whole: float) -> float:
    return float(100.0 * part / whole) if whole > 0 else float("nan")


def regional(tidal: np.ndarray, lung: np.ndarray, space: VoxelSpace,
             ring_z: tuple[float, ...] = (), position: str = "supine",
             silent_fraction: float = SILENT_FRACTION) -> Regional:
    """The regional parameters of `tidal` (P, R, C) over the lung region `lung`."""
    if tidal.shape != lung.shape or tidal.shape != space.shape:
        raise ValueError(f"tidal {tidal.shape}, lung {lung.shape} and space {space.shape} differ")
    if not lung.any():
        raise ValueError("lung region: no voxel")
    if position not in GRAVITY:
        raise ValueError(f"position: unknown {position!r}; known: {', '.join(GRAVITY)}")
    dz, dy, dx = space.spacing
    z, y, x = space.centres()
    weight = np.where(lung, np.clip(tidal, 0.0, None), 0.0)
    total = float(weight.sum())
    by_plane = weight.sum(axis=(1, 2))
    by_row, by_col = weight.sum(axis=(0, 2)), weight.sum(axis=(0, 1))
    left = _overlap(x, dx, 0.0, np.inf)
    z_low, z_high = _extent(lung, z, dz, 0)
    y_low, y_high = _extent(lung, y, dy, 1)
    x_low, x_high = _extent(lung, x, dx, 2)
    layers = np.linspace(y_low, y_high, 5)
    layer = tuple(_pct(float(by_row @ _overlap(y, dy, layers[k], layers[k + 1])), total)
                  for k in range(4))
    y_mid, z_mid = (y_low + y_high) / 2, (z_low + z_high) / 2
    ventral, dorsal = _overlap(y, dy, -np.inf, y_mid), _overlap(y, dy, y_mid, np.inf)
    row_col = weight.sum(axis=0)
    quadrants = {f"{ap}_{side}": _pct(float(rows @ row_col @ cols), total)
                 for ap, rows in (("ventral", ventral), ("dorsal", dorsal))
                 for side, cols in (("right", 1.0 - left), ("left", left))}
    rings = []
    for height in ring_z:
        k = space.plane_of(height)
        plane_cols = weight[k].sum(axis=0)
        plane_total = float(plane_cols.sum())
        rings.append(RingPlane(float(height), k, _pct(plane_total, total),
                               _pct(float(plane_cols @ left), plane_total),
                               _pct(float(plane_cols @ (1.0 - left)), plane_total)))
    cov = [float(w @ c) / total if total > 0 else float("nan")
           for w, c in ((by_col, x), (by_row, y), (by_plane, z))]
    values = weight[lung]
    gi = float(np.abs(values - np.median(values)).sum() / total) if total > 0 else float("nan")
    largest = float(np.max(tidal[lung]))
    silent = lung & (tidal < silent_fraction * largest) if largest > 0 else lung.copy()
    gravity = np.asarray(GRAVITY[position])
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    centre = np.array(cov) if total > 0 else np.array([x.mean(), y.mean(), z.mean()])
    depth = ((xx - centre[0]) * gravity[0] + (yy - centre[1]) * gravity[1]
             + (zz - centre[2]) * gravity[2])
    n_lung = float(lung.sum())
    # gravity is along one axis in every position: its share halves and centre along it
    axis = int(np.argmax(np.abs(gravity)))  # 0 x, 1 y, 2 z
    down = gravity[axis] > 0
    sums, centres_, step = ((by_col, x, dx), (by_row, y, dy), (by_plane, z, dz))[axis]
    low, high = ((x_low, x_high), (y_low, y_high), (z_low, z_high))[axis]
    lower = _pct(float(sums @ _overlap(centres_, step, -np.inf, (low + high) / 2)), total)
    cov_axis = _pct(cov[axis] - low, high - low)
    return Regional(
        left_pct=_pct(float(by_col @ left), total),
        right_pct=_pct(float(by_col @ (1.0 - left)), total),
        layer_pct=layer, quadrant_pct=quadrants,
        caudal_pct=_pct(float(by_plane @ _overlap(z, dz, -np.inf, z_mid)), total),
        cranial_pct=_pct(float(by_plane @ _overlap(z, dz, z_mid, np.inf)), total),
        plane_pct=tuple(_pct(float(v), total) for v in by_plane),
        ring_planes=tuple(rings),
        cov_x_pct=_pct(cov[0] - x_low, x_high - x_low),
        cov_y_pct=_pct(cov[1] - y_low, y_high - y_low),
        cov_z_pct=_pct(cov[2] - z_low, z_high - z_low),
        gi=gi,
        silent_pct=_pct(float(silent.sum()), n_lung),
        silent_dependent_pct=_pct(float((silent & (depth > 0)).sum()), n_lung),
        silent_nondependent_pct=_pct(float((silent & (depth <= 0)).sum()), n_lung),
        dependent_pct=100.0 - lower if down else lower,
        nondependent_pct=lower if down else 100.0 - lower,
        cov_gravity_pct=cov_axis if down else 100.0 - cov_axis,
    )


def ventilation_delay(inspiration: np.ndarray, times: np.ndarray,
                      threshold: float = RVD_THRESHOLD) -> np.ndarray:
    """(V,) regional ventilation delay in % of the inspiration time, from (n, V) voxel
    impedance samples between the start (row 0) and the end of inspiration (last row) at
    `times` (n,). The crossing of `threshold` x the voxel's rise is linearly interpolated;
    voxels that do not rise are nan."""
    if inspiration.shape[0] < 2 or inspiration.shape[0] != times.shape[0]:
        raise ValueError("inspiration: need two or more samples, one per time")
    rise = inspiration - inspiration[0]
    level = threshold * rise.max(axis=0)
    reached = rise >= level
    first = np.argmax(reached, axis=0)
    before = np.maximum(first - 1, 0)
    columns = np.arange(rise.shape[1])
    low, high = rise[before, columns], rise[first, columns]
    step = np.where(high > low, (level - low) / np.where(high > low, high - low, 1.0), 0.0)
    crossing = times[before] + np.clip(step, 0.0, 1.0) * (times[first] - times[before])
    delay = 100.0 * (crossing - times[0]) / (times[-1] - times[0])
    return np.where(level > 0, delay, np.nan)
