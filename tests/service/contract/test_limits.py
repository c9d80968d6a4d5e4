"""The session limits accept every preset and the meshes the project uses, and refuse what
would stall the API or a worker, naming the field."""

from __future__ import annotations

import pytest

from service.contract.geometry import GEOMETRY_PRESETS, resolve_geometry
from service.contract.grid import GridSpec
from service.contract.limits import LimitExceeded, SessionLimits, estimated_nodes
from service.contract.protocol import PROTOCOL_PRESETS, resolve_protocol

LIMITS = SessionLimits()


def check(geometry: object, protocol: object = "skip4", grid: GridSpec | None = None) -> None:
    g, p = resolve_geometry(geometry), resolve_protocol(protocol)
    LIMITS.check_geometry(g)
    LIMITS.check_protocol(p)
    grid = grid or GridSpec()
    LIMITS.check_grid(grid)
    LIMITS.check_model(g, p.build(g.electrodes.count), grid)


@pytest.mark.parametrize("geometry", sorted(GEOMETRY_PRESETS))
@pytest.mark.parametrize("protocol", sorted(PROTOCOL_PRESETS))
def test_every_preset_is_within_the_limits(geometry: str, protocol: str) -> None:
    check(geometry, protocol)


@pytest.mark.parametrize("mesh_size", [0.006, 0.009, 0.016, 0.02, 0.025])
def test_the_meshes_the_project_uses_are_within_the_limits(mesh_size: float) -> None:
    check({"preset": "thorax-2x16", "mesh_size": mesh_size})


def test_the_node_estimate_matches_the_default_mesh() -> None:
    # docs/forward-model.md: the default thorax at 9 mm has 25 028 nodes
    assert estimated_nodes(resolve_geometry("thorax-2x16")) == pytest.approx(25_028, rel=0.1)


@pytest.mark.parametrize(("geometry", "field"), [
    ({"mesh_size": 0.003}, "geometry.mesh_size"),
    ({"mesh_size": 1e-300}, "geometry.mesh_size"),
    ({"domain": {"kind": "thorax", "width": 1e6}}, "geometry.domain.width"),
    ({"electrodes": {"per_ring": 1000, "width": 1e-5}}, "geometry.electrodes.per_ring"),
    ({"mesh_size": 0.0045}, "geometry.mesh_size"),
])
def test_a_geometry_beyond_the_limits_names_its_field(geometry: dict, field: str) -> None:
    with pytest.raises(LimitExceeded) as caught:
        check(geometry)
    assert caught.value.field == field and str(caught.value).startswith(f"{field}: ")


def test_a_large_explicit_protocol_is_refused_before_it_is_built() -> None:
    n = 16
    big = {"kind": "explicit", "n_electrodes": n,
           "injections": [{"electrodes": [0, 1], "currents": [1.0, -1.0]}],
           "measurements": [{"injection": 0, "electrodes": [2, 3], "weights": [1.0, -1.0]}]
                           * (LIMITS.max_explicit_entries + 1)}
    with pytest.raises(LimitExceeded, match=r"^protocol\.measurements: "):
        LIMITS.check_protocol(resolve_protocol(big))
