"""`mk_stim_patterns`: the orders, signs and counts EIDORS documents (mk_stim_patterns.m's own
unit tests and the protocols EIDORS attaches to device files)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from service.contract.protocol import resolve_protocol
from service.contract.stim_patterns import mk_stim_patterns, protocol_sha256


def stim(protocol: dict[str, Any], k: int) -> np.ndarray:
    """EIDORS's stim(k+1).stim_pattern: the currents of injection k on every electrode."""
    out = np.zeros(protocol["n_electrodes"])
    inj = protocol["injections"][k]
    out[inj["electrodes"]] = inj["currents"]
    return out


def meas(protocol: dict[str, Any], k: int) -> np.ndarray:
    """EIDORS's stim(k+1).meas_pattern: one row per measurement of injection k."""
    rows = [m for m in protocol["measurements"] if m["injection"] == k]
    out = np.zeros((len(rows), protocol["n_electrodes"]))
    for row, m in zip(out, rows, strict=True):
        row[m["electrodes"]] = m["weights"]
    return out


def first_electrodes(protocol: dict[str, Any], k: int) -> list[int]:
    """The '+' electrode of each measurement of injection k, in order."""
    return [m["electrodes"][0] for m in protocol["measurements"] if m["injection"] == k]


def test_four_electrodes_default_options() -> None:
    p = mk_stim_patterns(4, 1, [0, 1], [0, 1], [], 1)
    np.testing.assert_array_equal(stim(p, 0), [-1, 1, 0, 0])
    np.testing.assert_array_equal(stim(p, 3), [1, 0, 0, -1])
    np.testing.assert_array_equal(meas(p, 0), [[0, 0, 1, -1]])
    np.testing.assert_array_equal(meas(p, 3), [[0, 1, -1, 0]])
    full = mk_stim_patterns(4, 1, [0, 1], [0, 1], ["meas_current"], 1)
    np.testing.assert_array_equal(meas(full, 0), [[1, -1, 0, 0], [0, 1, -1, 0], [0, 0, 1, -1],
                                                  [-1, 0, 0, 1]])


def test_six_electrodes_rotate_and_redundant() -> None:
    plain = mk_stim_patterns(6, 1, [0, 1], [0, 1], ["no_rotate_meas"], 1)
    np.testing.assert_array_equal(stim(plain, 1), [0, -1, 1, 0, 0, 0])
    np.testing.assert_array_equal(meas(plain, 1), [[0, 0, 0, 1, -1, 0], [0, 0, 0, 0, 1, -1],
                                                   [-1, 0, 0, 0, 0, 1]])
    np.testing.assert_array_equal(meas(plain, 2), [[1, -1, 0, 0, 0, 0], [0, 0, 0, 0, 1, -1],
                                                   [-1, 0, 0, 0, 0, 1]])
    rotated = mk_stim_patterns(6, 1, [0, 1], [0, 1], ["rotate_meas"], 1)
    np.testing.assert_array_equal(meas(rotated, 2), [[0, 0, 0, 0, 1, -1], [-1, 0, 0, 0, 0, 1],
                                                     [1, -1, 0, 0, 0, 0]])
    assert len(mk_stim_patterns(6, 1, [0, 1], [0, 1], ["do_redundant"], 1)["injections"]) == 6
    reduced = mk_stim_patterns(6, 1, [0, 1], [0, 1], ["no_redundant"], 1)
    assert len(reduced["injections"]) == 4
    np.testing.assert_array_equal(meas(reduced, 2), [[0, 0, 0, 0, 1, -1], [-1, 0, 0, 0, 0, 1]])
    np.testing.assert_array_equal(meas(reduced, 3), [[-1, 0, 0, 0, 0, 1]])


@pytest.mark.parametrize("options", [[], ["no_rotate_meas"], ["no_rotate_meas",
                                                             "no_meas_current"]])
def test_sixteen_adjacent(options: list[str]) -> None:
    p = mk_stim_patterns(16, 1, "{ad}", "{ad}", options, 1)
    assert len(p["injections"]) == 16
    np.testing.assert_array_equal(stim(p, 0), [-1, 1, *[0] * 14])
    np.testing.assert_array_equal(meas(p, 0)[[0, -1]], [[0, 0, 1, -1, *[0] * 12],
                                                        [*[0] * 14, 1, -1]])
    assert meas(p, 9).shape == (13, 16)
    np.testing.assert_array_equal(meas(p, 9)[[0, -1]], [[1, -1, *[0] * 14], [-1, *[0] * 14, 1]])


def test_sixteen_adjacent_rotated_and_reduced() -> None:
    p = mk_stim_patterns(16, 1, "{ad}", "{ad}", ["rotate_meas"], 1)
    np.testing.assert_array_equal(meas(p, 9)[[0, -1]], [[*[0] * 11, 1, -1, 0, 0, 0],
                                                        [*[0] * 7, 1, -1, *[0] * 7]])
    p = mk_stim_patterns(16, 1, "{ad}", "{ad}", ["rotate_meas", "no_redundant",
                                                  "no_meas_current"], 1)
    assert len(p["injections"]) == 14
    assert meas(p, 9).shape == (5, 16)
    np.testing.assert_array_equal(meas(p, 9)[[0, -1]], [[*[0] * 11, 1, -1, 0, 0, 0],
                                                        [-1, *[0] * 14, 1]])


@pytest.mark.parametrize(("inj", "options", "expected"), [
    ([0, 1], ["no_meas_current_next1", "no_rotate_meas"], [0, *range(6, 16)]),
    ([0, 1], ["no_meas_current_next2", "no_rotate_meas"], list(range(7, 16))),
    ([0, 1], ["no_meas_current_next3", "no_rotate_meas"], list(range(8, 15))),
    ([0, 5], ["no_meas_current_next1", "no_rotate_meas"], [0, 1, 5, 6, 10, 11, 12]),
    ([0, 5], ["no_meas_current_next1", "rotate_meas"], [5, 6, 10, 11, 12, 0, 1]),
    ([0, 5], ["no_meas_current_next2", "no_rotate_meas"], [11]),
    ([0, 5], ["no_meas_current_next3", "no_rotate_meas"], []),
])
def test_neighbour_exclusion(inj: list[int], options: list[str], expected: list[int]) -> None:
    """EIDORS's meas_sel tests next1a..next3b: the measurements kept for the 4th injection."""
    p = mk_stim_patterns(16, 1, inj, inj, options, 1)
    assert first_electrodes(p, 3) == expected


@pytest.mark.parametrize(("args", "count"), [
    ((16, 1, [0, 1], [0, 1], ["no_meas_current", "no_rotate_meas"]), 208),  # GET, Dräger
    ((16, 1, [0, 1], [0, 1], ["meas_current"]), 256),
    ((16, 1, [0, 1], [0, 1], ["no_meas_current", "no_redundant"]), 104),
    ((32, 1, [0, 5], [0, 5], ["no_rotate_meas", "no_meas_current"]), 928),  # Swisstom
    ((32, 1, [0, 5], [0, 5], ["no_meas_current_next1"]), 736),
    ((32, 1, [0, 4], [0, 4], ["meas_current", "no_rotate_meas"]), 1024),  # Dixtal
    ((16, 2, [0, 1], [0, 1], []), 928),
])
def test_counts(args: tuple, count: int) -> None:
    p = mk_stim_patterns(*args)
    spec = resolve_protocol(p)
    assert spec.build(p["n_electrodes"]).n_measurements == count


def test_opposite_current_sign_to_our_presets() -> None:
    """EIDORS's skip-5 with next1 is our skip4 + exclude_neighbours with the currents negated."""
    eidors = resolve_protocol(mk_stim_patterns(32, 1, [0, 5], [0, 5],
                                               ["no_meas_current_next1"])).build(32)
    ours = resolve_protocol({"kind": "skip", "injection_skip": 4, "measurement_skip": 4,
                             "exclude_neighbours": True}).build(32)
    np.testing.assert_array_equal(eidors.currents, -ours.currents)
    np.testing.assert_array_equal(eidors.meas_weights, ours.meas_weights)
    np.testing.assert_array_equal(eidors.meas_injection, ours.meas_injection)


def test_amplitude_and_refusals() -> None:
    assert stim(mk_stim_patterns(4, 1, [0, 1], [0, 1], [], 2), 1).tolist() == [0, -2, 2, 0]
    with pytest.raises(ValueError, match="mono"):
        mk_stim_patterns(4, 1, "{mono}", [0, 1])
    with pytest.raises(ValueError, match="balance_inj"):
        mk_stim_patterns(4, 1, [0, 1], [0, 1], ["balance_inj"])
    with pytest.raises(ValueError, match="one electrode"):
        mk_stim_patterns(4, 1, [0, 4], [0, 1])


def test_hash_is_stable() -> None:
    a = mk_stim_patterns(16, 1, [0, 1], [0, 1])
    b = mk_stim_patterns(16, 1, "{ad}", "{ad}", ["no_meas_current"])
    assert protocol_sha256(a) == protocol_sha256(b) and len(protocol_sha256(a)) == 64
    assert protocol_sha256(a) != protocol_sha256(mk_stim_patterns(16, 1, [0, 1], [0, 1],
                                                                  ["rotate_meas"]))


@pytest.mark.parametrize("spec, n_electrodes, m", [
    ({"kind": "eidors"}, 16, 208),
    ({"kind": "eidors", "options": ["meas_current"]}, 16, 256),
    ({"kind": "eidors", "options": ["no_redundant"]}, 16, 104),
    ({"kind": "eidors", "inj": [0, 5], "meas": [0, 5]}, 32, 928),
    ({"kind": "eidors", "inj": [0, 5], "meas": [0, 5], "options": ["no_meas_current_next1"]},
     32, 736),
    ({"kind": "eidors", "n_rings": 2}, 32, 928),
])
def test_eidors_protocol_kind_is_mk_stim_patterns(spec: dict[str, Any], n_electrodes: int,
                                                  m: int) -> None:
    """The contract's `eidors` kind builds exactly what `mk_stim_patterns` lists."""
    built = resolve_protocol(spec).build(n_electrodes)
    assert built.n_measurements == m
    rings = spec.get("n_rings", 1)
    explicit = resolve_protocol(mk_stim_patterns(
        n_electrodes // rings, rings, spec.get("inj", "{ad}"), spec.get("meas", "{ad}"),
        spec.get("options", ["no_meas_current"]))).build(n_electrodes)
    assert (built.currents == explicit.currents).all()
    assert (built.meas_weights == explicit.meas_weights).all()
    assert (built.meas_injection == explicit.meas_injection).all()


def test_eidors_protocol_kind_refuses_what_mk_stim_patterns_refuses() -> None:
    with pytest.raises(ValueError, match="trigonometric"):
        resolve_protocol({"kind": "eidors", "inj": "{trig}"}).build(16)
    with pytest.raises(ValueError, match="equal rings"):
        resolve_protocol({"kind": "eidors", "n_rings": 2}).build(15)
