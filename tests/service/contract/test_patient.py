"""The patient's thorax: perimeter = chest circumference, electrodes evenly spaced along the
outline, sizes from neonate to adult, outlines from a CT slice."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from service.contract.belts import BELTS
from service.contract.geometry import OutlineDomain, outline_perimeter
from service.contract.limits import SessionLimits
from service.contract.patient import ASPECT, PatientSpec, adult_perimeter, patient_geometry


def perimeter(geometry) -> float:
    return outline_perimeter(geometry.domain.outline(1024))


def electrode_xy(geometry) -> np.ndarray:
    """Electrode centres on the outline (x, y), in numbering order, from their arc lengths."""
    pts = geometry.domain.outline(4096)
    closed = np.vstack([pts, pts[:1]])
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(closed, axis=0), axis=1))])
    return np.column_stack([np.interp(geometry.electrode_arc, arc, closed[:, k])
                            for k in (0, 1)])


@pytest.mark.parametrize("circumference", [0.30, 0.55, 0.95, 1.30])
@pytest.mark.parametrize("belt", ["goettingen-16", "sentec-32", "eitmon-2x16"])
def test_perimeter_matches_the_circumference(circumference: float, belt: str) -> None:
    g = patient_geometry(PatientSpec(chest_circumference=circumference), BELTS[belt])
    assert perimeter(g) == pytest.approx(circumference, rel=2e-3)
    SessionLimits().check_geometry(g)  # every size from neonate to adult is accepted


def test_electrodes_evenly_spaced_along_the_outline() -> None:
    g = patient_geometry(PatientSpec(chest_circumference=0.6, width=0.2, depth=0.16),
                         BELTS["sentec-32"])
    arcs = np.sort(g.electrode_arc)
    gaps = np.diff(np.append(arcs, arcs[0] + perimeter(g)))
    assert gaps == pytest.approx(np.full(32, perimeter(g) / 32), rel=1e-6)
    xy = electrode_xy(g)
    # electrode 1: anterior, half a spacing to the patient's right (-x) of the midline
    assert xy[0, 1] < 0 and xy[0, 0] == pytest.approx(-0.5 * perimeter(g) / 32, rel=0.1)


def test_width_and_depth_keep_their_ratio_and_scale_to_the_circumference() -> None:
    g = patient_geometry(PatientSpec(width=0.30, depth=0.15, chest_circumference=0.5),
                         BELTS["goettingen-16"])
    assert g.domain.depth / g.domain.width == pytest.approx(0.5, rel=1e-3)
    g2 = patient_geometry(PatientSpec(width=0.30, depth=0.15), BELTS["goettingen-16"])
    assert (g2.domain.width, g2.domain.depth) == (0.30, 0.15)


def test_neonate_to_adult() -> None:
    sizes = {}
    for group in ("neonate", "infant", "child", "adult"):
        g = patient_geometry(PatientSpec(age_group=group), BELTS["goettingen-16"])
        sizes[group] = perimeter(g)
        assert g.domain.depth / g.domain.width == pytest.approx(ASPECT[group], rel=2e-3)
        spacing = perimeter(g) / 16
        assert g.electrodes.width <= 0.4 * spacing + 1e-4  # neighbours never touch
        assert g.domain.height >= 0.05 and g.mesh_size >= 0.004
    assert sizes["neonate"] < sizes["infant"] < sizes["child"] < sizes["adult"]
    assert sizes["neonate"] == pytest.approx(0.33, abs=0.02)  # a term neonate's chest
    assert sizes["adult"] == pytest.approx(adult_perimeter(), rel=1e-3)


def test_weight_sets_the_size_by_isometric_scaling() -> None:
    light = patient_geometry(PatientSpec(age_group="child", weight_kg=12.5), BELTS["draeger-16"])
    heavy = patient_geometry(PatientSpec(age_group="child", weight_kg=100.0),
                             BELTS["draeger-16"])
    assert perimeter(heavy) / perimeter(light) == pytest.approx(2.0, rel=2e-3)  # 8x weight


def ellipse(a: float, b: float, n: int = 60, shift: tuple[float, float] = (0.0, 0.0),
            clockwise: bool = False) -> list[tuple[float, float]]:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False) * (-1 if clockwise else 1)
    return [(a * np.cos(v) + shift[0], b * np.sin(v) + shift[1]) for v in t]


def test_outline_from_a_ct_slice_is_centred_oriented_and_scaled() -> None:
    points = ellipse(0.15, 0.10, shift=(0.4, -0.2), clockwise=True)
    g = patient_geometry(PatientSpec(outline=points, chest_circumference=0.6),
                         BELTS["goettingen-16"])
    assert isinstance(g.domain, OutlineDomain)
    assert perimeter(g) == pytest.approx(0.6, rel=2e-3)
    pts = g.domain.outline(512)
    assert np.abs(pts.min(axis=0) + pts.max(axis=0)).max() < 1e-3  # centred
    x, y = pts[:, 0], pts[:, 1]
    assert np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y) > 0  # counter-clockwise
    # the electrodes follow the outline: every centre lies on the (elliptic) boundary
    xy = electrode_xy(g)
    a, b = g.domain.width / 2, g.domain.depth / 2
    assert np.abs((xy[:, 0] / a) ** 2 + (xy[:, 1] / b) ** 2 - 1).max() < 0.02


def test_outline_keeps_its_size_without_circumference() -> None:
    g = patient_geometry(PatientSpec(outline=ellipse(0.15, 0.10)), BELTS["goettingen-16"])
    assert (g.domain.width, g.domain.depth) == pytest.approx((0.30, 0.20), rel=2e-3)


@pytest.mark.parametrize("points, match", [
    ([(0, 0), (0.1, 0.1), (0.1, 0), (0, 0.1), (0.05, 0.2), (0.02, 0.3), (0, 0.2), (-0.1, 0.1)],
     "crosses itself"),
    ([(3.0 * np.cos(t), 3.0 * np.sin(t)) for t in np.linspace(0, 6, 8)], "within"),
    ([(0.1 * k, 0.0) for k in range(8)], "no area"),
    ([(float("nan"), 0.0)] * 8, "finite"),
])
def test_bad_outlines_are_refused(points: list, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        OutlineDomain(points=points)


def test_patient_fields_are_checked() -> None:
    with pytest.raises(ValidationError, match="width and depth together"):
        PatientSpec(width=0.3)
    with pytest.raises(ValidationError):
        PatientSpec(chest_circumference=5.0)
