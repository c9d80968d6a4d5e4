"""Thoraxes varied beyond the three cases: random anatomy, breath and pathology (issue 17 §1).

`random_thorax(geometry, rng)` draws a `VariedPhantom` (a `Phantom` with random lung and heart
shapes, sizes and positions, an optional spine, one pathology) and the pair of breath states a
difference frame compares (`reference`, `frame`). The ranges are `VARIATION` (module constants,
documented in docs/educated-dip.md). Pathologies act on the lungs' ventilation:

- `one-sided`: one lung does not ventilate (it keeps the reference state's volume and
  conductivity);
- `dorsal`: the dorsal part of one or both lungs keeps the background conductivity;
- `edema`: wetter lungs (conductivity raised) with a reduced breath contrast;
- `effusion`: pleural fluid (`EFFUSION_SIGMA`) fills the basal-dorsal part of one side;
- `pneumothorax`: air (`PNEUMOTHORAX_SIGMA`) in the anterior part of one side;
- `atelectasis`: a collapsed, non-ventilated ball of lung at background conductivity.
Heart and spine are static apart from a cardiac deviation of the heart between the two states.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from service.contract.geometry import GeometrySpec
from worker.simulation.phantom import BreathState, Lung, Phantom

PathologyKind = Literal["none", "one-sided", "dorsal", "edema", "effusion", "pneumothorax",
                        "atelectasis"]
PATHOLOGIES: tuple[PathologyKind, ...] = ("none", "one-sided", "dorsal", "edema", "effusion",
                                          "pneumothorax", "atelectasis")
PATHOLOGY_WEIGHTS = (0.30, 0.12, 0.12, 0.12, 0.11, 0.11, 0.12)
EFFUSION_SIGMA = 1.5  # S/m, pleural fluid
PNEUMOTHORAX_SIGMA = 0.02  # S/m, air (a floor: the tissue around it still conducts)
# (low, high) of uniform draws; shapes relative to the domain's half-width a, half-depth b and
# height h, as `phantom.thorax_phantom` sets them
VARIATION: dict[str, tuple[float, float]] = {
    "lung_axes": (0.80, 1.15),  # factor on each semi-axis of each lung
    "lung_shift_x": (-0.06, 0.06),  # x a, per lung
    "lung_shift_y": (-0.08, 0.08),  # y b, per lung
    "lung_shift_z": (-0.05, 0.05),  # z h, both lungs
    "lung_base": (0.0, 0.12),  # h
    "lung_apex": (0.85, 1.05),  # h
    "heart_axes": (0.75, 1.30),  # factor on each semi-axis
    "heart_shift": (-0.07, 0.07),  # x a, y b, z h
    "reference_volume": (0.60, 0.85),  # fraction of full inspiration
    "breath_depth": (-0.05, 0.35),  # frame volume - reference volume (negative: expiration)
    "lung_sigma": (0.10, 0.22),  # S/m at the reference volume
    "sigma_drop": (0.15, 0.60),  # S/m per unit volume fraction inhaled
    "heart_sigma": (0.0, 0.30),  # heart conductivity above background, relative
    "cardiac": (-0.04, 0.04),  # relative heart deviation between the two states
    "dorsal_level": (-0.10, 0.45),  # y b above which a lung is lost (dorsal) or fluid (effusion)
    "edema_sigma": (1.15, 1.6),  # factor on the lungs' conductivity
    "edema_contrast": (0.35, 0.75),  # factor on the breath's conductivity drop
}
SPINE_PROBABILITY = 0.3
EMPTY_REFERENCE_PROBABILITY = 0.25


@dataclass(frozen=True)
class Pathology:
    """One pathology: its kind, side (0 patient right, 1 left, 2 both) and a level (y b for
    dorsal and effusion, the centre of the atelectasis ball as a fraction of the lung)."""

    kind: PathologyKind = "none"
    side: int = 0
    level: float = 0.0


@dataclass(frozen=True)
class VariedPhantom(Phantom):
    """A `Phantom` with one `Pathology`; `reference` is the state a one-sided loss keeps."""

    pathology: Pathology = Pathology()
    reference: BreathState | None = None
    half_depth: float = 0.11  # b, for the pathology levels

    def conductivity(self, pts: np.ndarray, state: BreathState) -> np.ndarray:
        """Absolute conductivity (S/m) at each point (n x 3), the pathology applied."""
        path, bg = self.pathology, self.background
        right, left = self.lungs(pts, state)
        lung_sigma = np.full(pts.shape[0], state.lung_sigma)
        if path.kind == "one-sided" and self.reference is not None:
            frozen = self.lungs(pts, self.reference)[path.side]
            (right, left) = (frozen, left) if path.side == 0 else (right, frozen)
            lung_sigma[(right, left)[path.side]] = self.reference.lung_sigma
        sigma = np.full(pts.shape[0], bg)
        lungs = right | left
        sigma[lungs] = lung_sigma[lungs]
        side = self._side(pts, right, left)
        if path.kind == "dorsal":
            sigma[side & (pts[:, 1] > path.level * self.half_depth)] = bg
        elif path.kind == "effusion":
            region = self._region(pts, path.side) & (pts[:, 1] > path.level * self.half_depth)
            region &= pts[:, 2] < self.right.base + 0.45 * (self.right.apex - self.right.base)
            sigma[region] = EFFUSION_SIGMA
        elif path.kind == "pneumothorax":
            region = self._region(pts, path.side) & (pts[:, 1] < -0.35 * self.half_depth)
            sigma[region] = PNEUMOTHORAX_SIGMA
        elif path.kind == "atelectasis":
            lung = (self.right, self.left)[min(path.side, 1)]
            centre = lung.centre + np.array([0.0, 0.5 * lung.semi_axes[1] * path.level,
                                             -0.6 * (lung.centre[2] - lung.base)])
            radius = 0.35 * float(min(lung.semi_axes))
            sigma[np.linalg.norm(pts - centre, axis=1) < radius] = bg
        sigma[self.heart(pts)] = state.heart_sigma
        if self.spine_sigma is not None:
            d = np.hypot(pts[:, 0] - self.spine_centre[0], pts[:, 1] - self.spine_centre[1])
            sigma[d <= self.spine_radius] = self.spine_sigma
        return sigma

    def _side(self, pts: np.ndarray, right: np.ndarray, left: np.ndarray) -> np.ndarray:
        """The lung points on the pathology's side (2: both)."""
        return (right, left, right | left)[self.pathology.side]

    def _region(self, pts: np.ndarray, side: int) -> np.ndarray:
        """Points on the pathology's half of the thorax (x < 0 is the patient's right)."""
        return pts[:, 0] < 0 if side == 0 else pts[:, 0] >= 0


@dataclass(frozen=True)
class VariedCase:
    """A drawn thorax and the two states of its difference frame; `empty`: the reference is the
    empty (homogeneous) thorax instead of `reference`."""

    phantom: VariedPhantom
    reference: BreathState
    frame: BreathState
    empty: bool


def _u(rng: np.random.Generator, name: str, size: int | None = None) -> np.ndarray | float:
    lo, hi = VARIATION[name]
    return rng.uniform(lo, hi, size)


def random_thorax(geometry: GeometrySpec, rng: np.random.Generator) -> VariedCase:
    """Draw one thorax, pathology and breath (module docstring) for `geometry`'s domain."""
    dom = geometry.domain
    a, b, h = dom.width / 2, dom.depth / 2, dom.height
    bg = geometry.background_conductivity
    base, apex = float(_u(rng, "lung_base")) * h, float(_u(rng, "lung_apex")) * h
    zc = base + 0.35 * (apex - base) + float(_u(rng, "lung_shift_z")) * h

    def lung(x: float, y: float, ax: float, ay: float) -> Lung:
        centre = np.array([(x + float(_u(rng, "lung_shift_x"))) * a,
                           (y + float(_u(rng, "lung_shift_y"))) * b, zc])
        axes = np.array([ax * a, ay * b]) * np.asarray(_u(rng, "lung_axes", 2))
        return Lung(centre=centre, semi_axes=axes, base=base, apex=apex)

    right, left = lung(-0.47, 0.05, 0.40, 0.68), lung(0.47, 0.08, 0.36, 0.64)
    shift = np.asarray(_u(rng, "heart_shift", 3)) * np.array([a, b, h])
    heart_centre = np.array([0.10 * a, -0.38 * b, 0.30 * h]) + shift
    heart_axes = np.array([0.30 * a, 0.36 * b, 0.28 * h]) * np.asarray(_u(rng, "heart_axes", 3))
    kind = PATHOLOGIES[int(rng.choice(len(PATHOLOGIES), p=PATHOLOGY_WEIGHTS))]
    side = int(rng.integers(0, 3 if kind == "dorsal" else 2))
    level = float(_u(rng, "dorsal_level")) if kind in ("dorsal", "effusion") else float(
        rng.uniform(0.3, 1.0))
    v_ref = float(_u(rng, "reference_volume"))
    v_frame = float(np.clip(v_ref + float(_u(rng, "breath_depth")), 0.45, 1.0))
    s_ref, drop = float(_u(rng, "lung_sigma")), float(_u(rng, "sigma_drop"))
    if kind == "edema":
        s_ref *= float(_u(rng, "edema_sigma"))
        drop *= float(_u(rng, "edema_contrast"))
    s_frame = max(0.05, s_ref - drop * (v_frame - v_ref))
    heart = bg * (1 + float(_u(rng, "heart_sigma")))
    reference = BreathState(v_ref, s_ref, heart)
    frame = BreathState(v_frame, s_frame, heart * (1 + float(_u(rng, "cardiac"))))
    spine = rng.random() < SPINE_PROBABILITY
    phantom = VariedPhantom(
        background=bg, right=right, left=left, heart_centre=heart_centre,
        heart_axes=heart_axes, spine_sigma=0.04 if spine else None, spine_centre=(0.0, 0.80 * b),
        spine_radius=0.10 * b, pathology=Pathology(kind, side, level), reference=reference,
        half_depth=b)
    return VariedCase(phantom, reference, frame, bool(rng.random() < EMPTY_REFERENCE_PROBABILITY))
