"""The patient's thorax from simple patient data, and the position that sets gravity.

`patient_geometry(patient, belt)` turns what a clinician knows at the bedside into the geometry
the model is built on:

- the cross-section at the belt: an outline polygon (e.g. traced on a CT slice) if given, else
  our thorax shape (`ThoraxDomain`: a superellipse with a spinal groove) with the patient's
  width and depth if given, else with the age group's depth/width ratio;
- its size: the chest circumference at the belt (the outline's perimeter is scaled to it), else
  width and depth as given, else a circumference estimated from the body weight by isometric
  scaling of our adult thorax, C = 0.892 m x (weight / 70 kg)^(1/3) (3.5 kg: 0.33 m, a term
  neonate's; 25 kg: 0.63 m), else the age group's typical weight;
- the electrodes of the belt (`service.contract.belts`), at equal arc length along the outline
  (the geometry's rule), the ring(s) centred in the slab;
- a smaller patient wears a smaller belt: below the adult thorax's perimeter the slab height,
  ring gap, electrode size and mesh size shrink by C / 0.892 m, and an electrode is never wider
  than 40 % of the electrode spacing (mesh size not below the API's 4 mm limit).

The thorax becomes rounder with age running backwards: the ratio of anterior-posterior to
transverse diameter is near 1 in infants and about 0.7 in adults (Openshaw, Edwards, Helms,
"Changes in rib cage geometry during childhood", Thorax 39:624-627, 1984); the ratios of
`ASPECT` are nominal values along that trend, our adult's being the default thorax's
0.22 / 0.32.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.contract.belts import BeltProfile
from service.contract.geometry import (
    MAX_OUTLINE_POINTS,
    GeometrySpec,
    OutlineDomain,
    ThoraxDomain,
    outline_perimeter,
)

AgeGroup = Literal["neonate", "infant", "child", "adult"]
# the patient's position, which sets gravity's direction (`worker.ventilation.regional.GRAVITY`)
Position = Literal["supine", "prone", "left-lateral", "right-lateral"]

ADULT = ThoraxDomain()  # the default thorax: 0.32 x 0.22 x 0.20 m
ADULT_WEIGHT_KG = 70.0
TYPICAL_WEIGHT_KG = {"neonate": 3.5, "infant": 10.0, "child": 25.0, "adult": ADULT_WEIGHT_KG}
ASPECT = {"neonate": 0.85, "infant": 0.85, "child": 0.75, "adult": ADULT.depth / ADULT.width}
MAX_ELECTRODE_FRACTION = 0.4  # of the electrode spacing
MIN_MESH_SIZE = 0.004  # m, the API's limit (`service.contract.limits`)
MIN_HEIGHT = 0.05  # m, the API's smallest extent


def adult_perimeter() -> float:
    return outline_perimeter(ADULT.outline(1024))


class PatientSpec(BaseModel):
    """What is known of the patient's thorax; every field is optional (an adult's)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    age_group: AgeGroup = "adult"
    chest_circumference: float | None = Field(
        None, ge=0.2, le=2.0, description="at the belt, m")
    width: float | None = Field(None, ge=0.05, le=1.0, description="left-right, at the belt, m")
    depth: float | None = Field(None, ge=0.05, le=1.0,
                                description="anterior-posterior, at the belt, m")
    weight_kg: float | None = Field(None, ge=0.3, le=400.0, description="body weight, kg")
    outline: tuple[tuple[float, float], ...] | None = Field(
        None, min_length=8, max_length=MAX_OUTLINE_POINTS,
        description="the cross-section at the belt as (x, y) vertices, m, LPS (+x left, "
                    "+y posterior), e.g. from a CT slice; scaled to the circumference or to "
                    "width and depth when those are given")

    @model_validator(mode="after")
    def _pairs(self) -> PatientSpec:
        if (self.width is None) != (self.depth is None):
            raise ValueError("patient: give width and depth together")
        return self

    def circumference(self) -> float | None:
        """The chest circumference to scale to: given, or estimated from the (typical) weight
        when no width and depth fix the size; None when they do."""
        if self.chest_circumference is not None:
            return self.chest_circumference
        if self.width is not None:
            return None
        if self.outline is not None and self.weight_kg is None:
            return None  # the outline's own size
        weight = self.weight_kg or TYPICAL_WEIGHT_KG[self.age_group]
        return adult_perimeter() * (weight / ADULT_WEIGHT_KG) ** (1.0 / 3.0)


def _cross_section(patient: PatientSpec, height: float = 0.2) -> ThoraxDomain | OutlineDomain:
    """The domain before it is scaled to the circumference."""
    if patient.outline is not None:
        domain = OutlineDomain(points=patient.outline, height=height)
        if patient.width is None:
            return domain
        pts = domain.outline(MAX_OUTLINE_POINTS)
        pts = pts * [patient.width / domain.width, patient.depth / domain.depth]
        return OutlineDomain(points=tuple(map(tuple, pts)), height=height)
    if patient.width is not None:
        return ThoraxDomain(width=patient.width, depth=patient.depth, height=height)
    aspect = ASPECT[patient.age_group]
    return ThoraxDomain(width=1.0, depth=aspect, height=height)


def _mm10(value: float) -> float:
    """Rounded to 0.1 mm: the same patient gives the same spec (and model cache key)."""
    return round(float(value), 4)


def _scaled(domain: ThoraxDomain | OutlineDomain, factor: float, height: float
            ) -> ThoraxDomain | OutlineDomain:
    if isinstance(domain, ThoraxDomain):
        return ThoraxDomain(width=_mm10(domain.width * factor),
                            depth=_mm10(domain.depth * factor), height=height)
    pts = domain.outline(MAX_OUTLINE_POINTS) * factor
    return OutlineDomain(points=tuple((_mm10(x), _mm10(y)) for x, y in pts), height=height)


def patient_geometry(patient: PatientSpec, belt: BeltProfile) -> GeometrySpec:
    """The geometry of `belt` worn by `patient` (module doc)."""
    domain = _cross_section(patient)
    perimeter = outline_perimeter(domain.outline(1024))
    target = patient.circumference()
    factor = 1.0 if target is None else target / perimeter
    perimeter *= factor
    size = min(1.0, perimeter / adult_perimeter())  # a smaller patient's belt
    height = _mm10(max(ADULT.height * size, MIN_HEIGHT))
    domain = _scaled(domain, factor, height)
    electrodes = belt.electrodes(height, size,
                                 MAX_ELECTRODE_FRACTION * perimeter / belt.per_ring)
    electrodes.update(ring_heights=tuple(map(_mm10, electrodes["ring_heights"])),
                      width=_mm10(electrodes["width"]), height=_mm10(electrodes["height"]))
    mesh = _mm10(max(GeometrySpec.model_fields["mesh_size"].default * size, MIN_MESH_SIZE))
    return GeometrySpec(domain=domain, electrodes=electrodes, mesh_size=mesh)
