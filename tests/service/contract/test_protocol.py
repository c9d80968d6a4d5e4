from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from service.contract.protocol import resolve_protocol


@pytest.mark.parametrize(
    ("name", "n_electrodes", "m"),
    [
        ("skip4", 32, 32 * 29),  # each drive loses the 3 pairs touching its electrodes
        ("skip4-noreciprocal", 32, 32 * 29 // 2),
        ("adjacent", 16, 16 * 13),
        ("adjacent-noreciprocal", 16, 104),
        ("skip4", 16, 16 * 13),
        ("adjacent", 32, 32 * 29),
    ],
)
def test_preset_measurement_counts(name: str, n_electrodes: int, m: int) -> None:
    assert resolve_protocol(name).build(n_electrodes).n_measurements == m


def test_skip_pattern_structure() -> None:
    p = resolve_protocol("skip4").build(32)
    assert np.allclose(p.currents.sum(axis=1), 0) and np.allclose(p.meas_weights.sum(axis=1), 0)
    assert p.currents[0, 0] == 1 and p.currents[0, 5] == -1
    for k, d in enumerate(p.meas_injection):
        driven = np.flatnonzero(p.currents[d])
        assert not set(np.flatnonzero(p.meas_weights[k])) & set(driven)


def test_exclude_neighbours_drops_more() -> None:
    base = resolve_protocol({"kind": "skip"}).build(32).n_measurements
    nb = resolve_protocol({"kind": "skip", "exclude_neighbours": True}).build(32).n_measurements
    keep_driven = resolve_protocol({"kind": "skip", "exclude_driven": False}).build(32)
    assert nb < base < keep_driven.n_measurements == 32 * 32


def test_dropped_reciprocals_are_exactly_the_duplicates() -> None:
    full = resolve_protocol("adjacent").build(16)
    half = resolve_protocol("adjacent-noreciprocal").build(16)
    def key(p, k):
        return (frozenset(np.flatnonzero(p.currents[p.meas_injection[k]])),
                frozenset(np.flatnonzero(p.meas_weights[k])))
    pairs = {key(full, k) for k in range(full.n_measurements)}
    kept = {key(half, k) for k in range(half.n_measurements)}
    assert all((b, a) in pairs for a, b in pairs)
    assert all((b, a) not in kept for a, b in kept if a != b)


def _explicit(**over):
    spec = {"kind": "explicit", "n_electrodes": 4,
            "injections": [{"electrodes": [0, 2], "currents": [1.0, -1.0]},
                           {"electrodes": [0, 1, 2], "currents": [0.5, 0.5, -1.0]}],
            "measurements": [{"injection": 0, "electrodes": [1, 3], "weights": [1, -1]},
                             {"injection": 1, "electrodes": [3, 2], "weights": [1, -1]}]}
    spec.update(over)
    return spec


def test_explicit_protocol_with_multi_electrode_injection() -> None:
    p = resolve_protocol(_explicit()).build(4)
    assert p.n_measurements == 2
    assert np.allclose(p.currents[1], [0.5, 0.5, -1.0, 0.0])
    assert list(p.meas_injection) == [0, 1]


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"injections": [{"electrodes": [0, 9], "currents": [1, -1]}]}, "electrode 9"),
        ({"injections": [{"electrodes": [0, 1], "currents": [1, -0.5]}]}, "sum to zero"),
        ({"measurements": [{"injection": 0, "electrodes": [1, 7], "weights": [1, -1]}]},
         "electrode 7"),
        ({"measurements": [{"injection": 5, "electrodes": [1, 2], "weights": [1, -1]}]},
         "injection 5"),
        ({"measurements": [{"injection": 0, "electrodes": [1, 2], "weights": [1, 1]}]},
         "sum to zero"),
    ],
)
def test_bad_protocols_are_rejected(over: dict, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        resolve_protocol(_explicit(**over))


def test_explicit_protocol_must_match_geometry() -> None:
    with pytest.raises(ValueError, match="n_electrodes"):
        resolve_protocol(_explicit()).build(16)
