from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from pydantic import ValidationError

from service.contract.geometry import (
    GEOMETRY_PRESETS,
    GeometrySpec,
    outline_perimeter,
    resolve_geometry,
    ring_order,
)


@pytest.mark.parametrize("name", list(GEOMETRY_PRESETS))
def test_presets_are_valid(name: str) -> None:
    spec = resolve_geometry(name)
    assert spec.electrodes.count in (16, 32)
    assert len(spec.electrode_arc) == spec.electrodes.count


def test_default_is_two_ring_thorax_of_adult_size() -> None:
    spec = resolve_geometry(None)
    assert spec.domain.kind == "thorax" and spec.electrodes.count == 32
    pts = spec.domain.outline(512)
    width, depth = np.ptp(pts[:, 0]), np.ptp(pts[:, 1])
    assert width == pytest.approx(0.32, rel=0.03) and depth == pytest.approx(0.22, rel=0.05)


def test_thorax_is_left_right_symmetric_and_flatter_posteriorly() -> None:
    pts = resolve_geometry("thorax-2x16").domain.outline(512)
    mirrored = pts * [-1, 1]
    d = np.min(np.linalg.norm(pts[:, None] - mirrored[None], axis=2), axis=1)
    assert d.max() < 2e-3
    # the spinal groove: the posterior midline lies inside the outline's posterior extreme
    back = pts[np.abs(pts[:, 0]) < 0.005, 1].max()
    assert back < pts[:, 1].max() - 1e-3


def test_electrodes_are_evenly_spaced_and_first_is_right_of_anterior_midline() -> None:
    spec = resolve_geometry({"preset": "thorax-1x16"})
    arcs = np.sort(spec.electrode_arc)
    spacing = np.diff(np.append(arcs, arcs[0] + outline_perimeter(spec.domain.outline(1024))))
    assert np.allclose(spacing, spacing.mean(), rtol=1e-6)
    from worker.forward.mesh import Outline

    xy = Outline(spec).point_at(spec.electrode_arc)
    assert xy[0, 0] < 0 and xy[0, 1] < 0  # patient's right (-x), anterior (-y)
    assert xy[3, 0] < xy[0, 0]  # going counter-clockwise from the feet: towards the right side


def test_numbering_orders() -> None:
    assert ring_order(4, 2, "planar")[:5] == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0)]
    assert ring_order(4, 2, "zigzag")[:4] == [(0, 0), (1, 0), (0, 1), (1, 1)]
    assert ring_order(4, 2, "square")[:6] == [(0, 0), (1, 0), (1, 1), (0, 1), (0, 2), (1, 2)]
    for order in ("planar", "zigzag", "square"):
        assert sorted(ring_order(16, 2, order)) == [(r, j) for r in range(2) for j in range(16)]


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"electrodes": {"width": 0.06}}, "electrodes.width"),
        ({"electrodes": {"per_ring": 32, "ring_heights": [0.1], "width": 0.03}},
         "electrodes.width"),
        ({"electrodes": {"ring_heights": [0.07, 0.195]}}, "electrodes.ring_heights[1]"),
        ({"electrodes": {"ring_heights": [0.10, 0.11]}}, "electrodes.ring_heights"),
        ({"domain": {"kind": "thorax", "width": -0.3}}, "width"),
        ({"electrodes": {"height": 0}}, "height"),
        ({"electrodes": {"contact_impedance": -1}}, "contact_impedance"),
        ({"background_conductivity": 0}, "background_conductivity"),
    ],
)
def test_bad_specs_name_the_field(override: dict, field: str) -> None:
    with pytest.raises(ValidationError) as err:
        resolve_geometry(override)
    assert field in str(err.value)


def test_unknown_preset_and_unknown_field() -> None:
    with pytest.raises(ValueError, match="unknown preset"):
        resolve_geometry("thorax-3x12")
    with pytest.raises(ValidationError, match="colour"):
        resolve_geometry({"colour": "blue"})


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_load_from_file(tmp_path, suffix: str) -> None:
    data = {"domain": {"kind": "cylinder", "radius": 0.1}, "electrodes": {"per_ring": 8}}
    path = tmp_path / f"g{suffix}"
    path.write_text(yaml.safe_dump(data) if suffix == ".yaml" else json.dumps(data))
    spec = resolve_geometry(str(path))
    assert spec.domain.kind == "cylinder" and spec.electrodes.count == 16
    assert GeometrySpec.model_validate(spec.model_dump(mode="json")) == spec
