"""The shape tank of the Diff-INR seed: layout, areas, conductivities, the case's timeline."""

from __future__ import annotations

import numpy as np
import pytest

from service.contract.geometry import resolve_geometry
from worker.simulation.cases import timeline
from worker.simulation.tank import CONDUCTOR, INSULATOR, tank_phantom


def test_inclusions_have_the_seed_areas_and_fit_the_tank() -> None:
    geo = resolve_geometry("cylinder-1x32")
    phantom = tank_phantom(geo)
    areas = {inc.name: inc.area * 1e4 for inc in phantom.inclusions}  # cm²
    assert areas == pytest.approx({"triangle": 31.29, "rectangle": 28.7, "circle": 30.19},
                                  abs=0.01)
    rng = np.random.default_rng(0)
    r = geo.domain.radius * np.sqrt(rng.random(200_000))
    t = 2 * np.pi * rng.random(200_000)
    pts = np.column_stack([r * np.cos(t), r * np.sin(t), rng.random(200_000) * 0.2])
    inside = np.stack([inc.contains(pts) for inc in phantom.inclusions])
    assert inside.sum(axis=0).max() == 1  # disjoint
    area = np.pi * geo.domain.radius**2
    np.testing.assert_allclose(inside.mean(axis=1) * area,
                               [inc.area for inc in phantom.inclusions], rtol=0.05)
    for hits in inside:  # well inside the wall
        assert np.hypot(pts[hits, 0], pts[hits, 1]).max() < 0.95 * geo.domain.radius


def test_conductivities_and_extrusion() -> None:
    geo = resolve_geometry("cylinder-1x16")
    phantom = tank_phantom(geo)
    bg = geo.background_conductivity
    assert sorted(inc.sigma / bg for inc in phantom.inclusions) == [INSULATOR, INSULATOR,
                                                                   CONDUCTOR]
    centre = np.array([[0.0, 0.070, z] for z in (0.01, 0.1, 0.19)])  # the circle's axis
    np.testing.assert_allclose(phantom.conductivity(centre), INSULATOR * bg)
    assert phantom.conductivity(np.array([[0.0, -0.12, 0.1]]))[0] == bg
    with pytest.raises(ValueError, match="cylinder"):
        tank_phantom(resolve_geometry("thorax-1x16"))


def test_the_case_is_one_static_frame_against_the_empty_tank() -> None:
    tl = timeline("tank-shapes", 0.24)
    assert len(tl.states) == 1 and tl.reference == "empty" and not tl.edema
    assert len(timeline("tank-shapes", 0.24, frames=3).states) == 3
