"""EIDORS-style protocols: `mk_stim_patterns(n_elec, n_rings, inj, meas, options, amplitude)`.

Builds our explicit protocol dict (`service.contract.protocol.ExplicitProtocol`) with the
injections and measurements that EIDORS's `mk_stim_patterns` (eidors/models/mk_stim_patterns.m)
lists, in the same order, so that a voltage vector read by EIDORS lines up channel by channel.

Conventions carried over from EIDORS (bipolar patterns only):
- injection `[a, b]` drives -amplitude on electrode e+a and +amplitude on e+b (e = 0..n_elec-1
  in each ring): the OPPOSITE current sign of our `skip` presets, which drive +1 on e;
- measurement `[a, b]` weighs +1 on electrode m+a and -1 on m+b (the same as our presets);
- `'{ad}'` is `[0, 1]` and `'{op}'` is `[0, n_elec // 2]`;
- options (the last contradicting one wins; the defaults are `no_meas_current`,
  `no_rotate_meas`, `do_redundant`):
  - `no_meas_current` drops measurements that use a current-carrying electrode;
    `no_meas_current_next1|2|3` also drop those on the 1, 2 or 3 neighbours of each of them
    (around its ring); `meas_current` keeps them all;
  - `rotate_meas` starts each injection's measurements at its first driven electrode,
    `no_rotate_meas` at electrode 0;
  - `no_redundant` drops a measurement whose reciprocal (drive and measurement pairs swapped)
    was listed before, within the ring; `do_redundant` keeps both.
- Rings: each ring's electrodes are driven in turn; every injection measures every ring (its
  pairs taken within each ring). An injection left with no measurement is dropped.
- `amplitude` scales the currents. Our models multiply the protocol's currents by the
  geometry's `current_amplitude` (A), so the default here is 1 (unit patterns), not EIDORS's
  0.010 A.

Trigonometric and monopolar ('{mono}', balance_*) patterns do not sum to zero per injection or
measurement as our protocols require, and are refused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

_DEFAULTS = {"meas_current": False, "next": 0, "rotate": False, "redundant": True}
_OPTIONS: dict[str, dict[str, Any]] = {
    "no_meas_current": {"meas_current": False, "next": 0},
    "no_meas_current_next1": {"meas_current": False, "next": 1},
    "no_meas_current_next2": {"meas_current": False, "next": 2},
    "no_meas_current_next3": {"meas_current": False, "next": 3},
    "meas_current": {"meas_current": True},
    "rotate_meas": {"rotate": True},
    "no_rotate_meas": {"rotate": False},
    "do_redundant": {"redundant": True},
    "no_redundant": {"redundant": False},
}


def _pair(value: str | Sequence[int], n_elec: int, what: str) -> tuple[int, int]:
    """A bipolar pattern `[a, b]` from '{ad}', '{op}' or a pair of offsets."""
    if isinstance(value, str):
        named = {"{ad}": (0, 1), "{op}": (0, n_elec // 2)}
        if value not in named:
            raise ValueError(f"{what}: {value!r} is not supported (bipolar '{{ad}}', '{{op}}' or "
                             f"[a, b] only; trigonometric and monopolar patterns do not sum to "
                             f"zero)")
        return named[value]
    offsets = [int(v) for v in value]
    if len(offsets) != 2:
        raise ValueError(f"{what}: expected a bipolar pattern [a, b], got {list(value)}")
    if (offsets[0] - offsets[1]) % n_elec == 0:
        raise ValueError(f"{what}: [a, b] = {offsets} puts both ends on one electrode")
    return offsets[0], offsets[1]


def _settings(options: Sequence[str]) -> dict[str, Any]:
    settings = dict(_DEFAULTS)
    for option in options:
        if option not in _OPTIONS:
            raise ValueError(f"options: {option!r} is not supported; supported: "
                             f"{', '.join(_OPTIONS)}")
        settings.update(_OPTIONS[option])
    return settings


def mk_stim_patterns(n_elec: int, n_rings: int, inj: str | Sequence[int],
                     meas: str | Sequence[int], options: Sequence[str] = (),
                     amplitude: float = 1.0) -> dict[str, Any]:
    """The explicit protocol dict EIDORS's `mk_stim_patterns` describes (see the module doc)."""
    if n_elec < 3 or n_rings < 1:
        raise ValueError(f"need at least 3 electrodes per ring and 1 ring, got {n_elec}, "
                         f"{n_rings}")
    if amplitude <= 0:
        raise ValueError(f"amplitude: must be positive, got {amplitude}")
    inj_a, inj_b = _pair(inj, n_elec, "inj")
    meas_a, meas_b = _pair(meas, n_elec, "meas")
    settings = _settings(options)
    total = n_elec * n_rings
    injections: list[dict[str, Any]] = []
    measurements: list[dict[str, Any]] = []
    for ring in range(n_rings):
        seen: set[tuple[tuple[int, ...], tuple[int, ...]]] = set()
        for elec in range(n_elec):
            driven = [(inj_a + elec) % n_elec + n_elec * ring,
                      (inj_b + elec) % n_elec + n_elec * ring]
            banned = set(driven) if not settings["meas_current"] else set()
            if banned and settings["next"]:
                banned |= {(off + elec + step) % n_elec + n_elec * ring
                           for off in (inj_a, inj_b)
                           for step in range(-settings["next"], settings["next"] + 1)}
            start = elec if settings["rotate"] else 0
            kept: list[list[int]] = []
            for column in range(total):
                base = (column // n_elec) * n_elec
                pair = [(meas_a + column % n_elec + start) % n_elec + base,
                        (meas_b + column % n_elec + start) % n_elec + base]
                if banned & set(pair):
                    continue
                if not settings["redundant"]:
                    key = (tuple(sorted(driven)), tuple(sorted(pair)))
                    if key in seen:
                        continue
                    seen.update({key, (key[1], key[0])})
                kept.append(pair)
            if not kept:
                continue
            index = len(injections)
            injections.append({"electrodes": driven, "currents": [-amplitude, amplitude]})
            measurements.extend({"injection": index, "electrodes": pair, "weights": [1.0, -1.0]}
                                for pair in kept)
    return {"kind": "explicit", "n_electrodes": total, "injections": injections,
            "measurements": measurements}


def renumber(protocol: dict[str, Any], model_electrode: Sequence[int]) -> dict[str, Any]:
    """The explicit `protocol` with device electrode i renamed `model_electrode[i]` (for a
    device that numbers its electrodes in another order than the geometry does)."""
    order = list(model_electrode)
    if sorted(order) != list(range(protocol["n_electrodes"])):
        raise ValueError(f"model_electrode: {order} is not a permutation of the "
                         f"{protocol['n_electrodes']} electrodes")
    def rename(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**item, "electrodes": [order[e] for e in item["electrodes"]]} for item in items]

    return {**protocol, "injections": rename(protocol["injections"]),
            "measurements": rename(protocol["measurements"])}


def protocol_sha256(protocol: dict[str, Any]) -> str:
    """A stable hash of a protocol dict (canonical JSON: sorted keys, no spaces)."""
    text = json.dumps(protocol, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
