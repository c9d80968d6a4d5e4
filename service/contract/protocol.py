"""Measurement protocols: the explicit general form, and skip-k presets that build it.

Torch- and gmsh-free (the API needs M). A protocol is, explicitly,
- the electrode currents of each injection (any number of electrodes; each sums to zero), and
- an ordered list of measurements, each a pair (injection index, electrode weights) whose
  weights sum to zero (differential, so independent of the voltage gauge).
The order of measurements is the order of a frame's voltages.

The default for every belt is skip-4 injection with skip-4 measurement over the electrode
numbering, excluding measurements on current-carrying electrodes and keeping reciprocal pairs:
Grychtol et al. 2019 ("Thoracic EIT in 3D: experiences and recommendations", Physiol. Meas.
40 074006) recommend two electrode planes, square numbering, driven and measured with skip 4;
for 32 electrodes each drive loses the 3 pairs touching its two electrodes (the driven pair
itself is one of them), so M = 32 x 29 = 928, or 464 without reciprocal duplicates.

The `eidors` kind is EIDORS's `mk_stim_patterns` (`service.contract.stim_patterns`), the way
device files and EIDORS users state their protocols; its presets are the ones the belts of
`service.contract.belts` use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt, model_validator

from service.contract.geometry import load_spec_file
from service.contract.stim_patterns import mk_stim_patterns

_ZERO_SUM_TOL = 1e-9


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Injection(_Spec):
    electrodes: list[NonNegativeInt]
    currents: list[float] = Field(description="A, one per electrode, summing to zero")

    @model_validator(mode="after")
    def _check(self) -> Injection:
        if len(self.electrodes) != len(self.currents) or len(self.electrodes) < 2:
            raise ValueError("injections: give matching electrodes and currents, two at least")
        if len(set(self.electrodes)) != len(self.electrodes):
            raise ValueError("injections: an electrode appears twice in one injection")
        scale = max(abs(c) for c in self.currents)
        if scale == 0 or abs(sum(self.currents)) > _ZERO_SUM_TOL * max(scale, 1.0):
            raise ValueError(f"injections: currents {self.currents} do not sum to zero")
        return self


class Measurement(_Spec):
    injection: NonNegativeInt
    electrodes: list[NonNegativeInt]
    weights: list[float] = Field(description="voltage weights, summing to zero (differential)")

    @model_validator(mode="after")
    def _check(self) -> Measurement:
        if len(self.electrodes) != len(self.weights) or len(self.electrodes) < 2:
            raise ValueError("measurements: give matching electrodes and weights, two at least")
        if abs(sum(self.weights)) > _ZERO_SUM_TOL * max(1.0, max(abs(w) for w in self.weights)):
            raise ValueError(f"measurements: weights {self.weights} do not sum to zero")
        return self


class ExplicitProtocol(_Spec):
    """The general form; both fixed-set and per-injection measurement hardware fit it."""

    kind: Literal["explicit"] = "explicit"
    n_electrodes: PositiveInt
    injections: list[Injection]
    measurements: list[Measurement]

    @model_validator(mode="after")
    def _check(self) -> ExplicitProtocol:
        n = self.n_electrodes
        for k, inj in enumerate(self.injections):
            bad = [e for e in inj.electrodes if e >= n]
            if bad:
                raise ValueError(f"injections[{k}]: electrode {bad[0]} does not exist (0..{n - 1})")
        for k, m in enumerate(self.measurements):
            if m.injection >= len(self.injections):
                raise ValueError(f"measurements[{k}]: injection {m.injection} does not exist")
            bad = [e for e in m.electrodes if e >= n]
            if bad:
                raise ValueError(
                    f"measurements[{k}]: electrode {bad[0]} does not exist (0..{n - 1})")
        if not self.measurements:
            raise ValueError("measurements: a protocol needs at least one measurement")
        return self

    def build(self, n_electrodes: int) -> Protocol:
        if n_electrodes != self.n_electrodes:
            raise ValueError(f"protocol.n_electrodes: {self.n_electrodes} does not match the "
                             f"geometry's {n_electrodes} electrodes")
        cur = np.zeros((len(self.injections), n_electrodes))
        for k, inj in enumerate(self.injections):
            cur[k, inj.electrodes] = inj.currents
        w = np.zeros((len(self.measurements), n_electrodes))
        for k, m in enumerate(self.measurements):
            w[k, m.electrodes] = m.weights
        return Protocol(currents=cur,
                        meas_injection=np.array([m.injection for m in self.measurements]),
                        meas_weights=w)


class SkipProtocol(_Spec):
    """Pair drive (e, e+skip+1) for every e, pair measurement (m, m+skip+1) for every m.

    Indices run over the electrode numbering (mod L), so with two rings the numbering order
    (planar, zigzag, square) decides which physical electrodes pair up.
    """

    kind: Literal["skip"] = "skip"
    injection_skip: NonNegativeInt = 4
    measurement_skip: NonNegativeInt = 4
    exclude_driven: bool = Field(True, description="drop measurements on a driven electrode")
    exclude_neighbours: bool = Field(
        False, description="also drop measurements on a driven electrode's direct neighbours")
    reciprocal: Literal["keep", "drop"] = Field(
        "keep", description="keep both of a reciprocal pair, or only the first")

    def build(self, n_electrodes: int) -> Protocol:
        n = n_electrodes
        if max(self.injection_skip, self.measurement_skip) + 1 >= n:
            raise ValueError(f"protocol: skip too large for {n} electrodes")
        di, dm = self.injection_skip + 1, self.measurement_skip + 1
        cur = np.zeros((n, n))
        cur[np.arange(n), np.arange(n)] += 1.0
        cur[np.arange(n), (np.arange(n) + di) % n] -= 1.0
        # electrode sets as bit masks: the loop runs n^2 times for every session request
        pairs = [(1 << m) | (1 << (m + dm) % n) for m in range(n)]
        rows: list[tuple[int, int]] = []  # (drive, first measured electrode)
        seen: set[tuple[int, int]] = set()
        for d in range(n):
            driven = (1 << d) | (1 << (d + di) % n)
            banned = driven if self.exclude_driven else 0
            if self.exclude_neighbours:
                for e in (d, (d + di) % n):
                    banned |= (1 << (e - 1) % n) | (1 << (e + 1) % n)
            for m, pair in enumerate(pairs):
                if pair & banned:
                    continue
                if self.reciprocal == "drop":
                    if (pair, driven) in seen:
                        continue
                    seen.add((driven, pair))
                rows.append((d, m))
        drive = np.array([r[0] for r in rows], dtype=np.int64)
        first = np.array([r[1] for r in rows], dtype=np.int64)
        w = np.zeros((len(rows), n))
        w[np.arange(len(rows)), first] = 1.0
        w[np.arange(len(rows)), (first + dm) % n] = -1.0
        return Protocol(currents=cur, meas_injection=drive, meas_weights=w)


class EidorsProtocol(_Spec):
    """EIDORS's `mk_stim_patterns(n_elec, n_rings, inj, meas, options, amplitude)` as a spec
    (`service.contract.stim_patterns`): n_elec is the geometry's electrodes per ring; built as
    the explicit protocol, in EIDORS's order and with its current sign (-1 on e + inj[0])."""

    kind: Literal["eidors"] = "eidors"
    n_rings: PositiveInt = Field(1, le=2, description="rings, as the geometry's")
    inj: str | tuple[int, int] = Field("{ad}", description="'{ad}', '{op}' or [a, b]")
    meas: str | tuple[int, int] = Field("{ad}", description="'{ad}', '{op}' or [a, b]")
    options: tuple[str, ...] = Field(
        ("no_meas_current",), max_length=8,
        description="no_meas_current[_next1|2|3], meas_current, rotate_meas, no_rotate_meas, "
                    "do_redundant, no_redundant")
    amplitude: float = Field(1.0, gt=0, description="scales the unit currents")

    def explicit(self, n_electrodes: int) -> ExplicitProtocol:
        if n_electrodes % self.n_rings:
            raise ValueError(f"protocol.n_rings: {n_electrodes} electrodes do not make "
                             f"{self.n_rings} equal rings")
        return ExplicitProtocol.model_validate(mk_stim_patterns(
            n_electrodes // self.n_rings, self.n_rings, self.inj, self.meas, self.options,
            self.amplitude))

    def build(self, n_electrodes: int) -> Protocol:
        return self.explicit(n_electrodes).build(n_electrodes)


ProtocolSpec = Annotated[ExplicitProtocol | SkipProtocol | EidorsProtocol,
                         Field(discriminator="kind")]
AnyProtocol = ExplicitProtocol | SkipProtocol | EidorsProtocol


@dataclass(frozen=True)
class Protocol:
    """A built protocol: unit current patterns (scaled by the geometry's amplitude) and
    measurements in frame order."""

    currents: np.ndarray  # n_injections x L, summing to zero per row
    meas_injection: np.ndarray  # M, index into currents
    meas_weights: np.ndarray  # M x L, summing to zero per row

    @property
    def n_measurements(self) -> int:
        return int(self.meas_weights.shape[0])


PROTOCOL_PRESETS: dict[str, dict[str, Any]] = {
    "skip4": {"kind": "skip", "injection_skip": 4, "measurement_skip": 4},
    "adjacent": {"kind": "skip", "injection_skip": 0, "measurement_skip": 0},
    "adjacent-noreciprocal": {"kind": "skip", "injection_skip": 0, "measurement_skip": 0,
                              "reciprocal": "drop"},
    "skip4-noreciprocal": {"kind": "skip", "injection_skip": 4, "measurement_skip": 4,
                           "reciprocal": "drop"},
    # EIDORS's protocol of the Goe-MF II and Dräger files: adjacent, no measurement on a
    # driven electrode, per injection from electrode 1 (M = 208 on 16 electrodes)
    "eidors-adjacent": {"kind": "eidors", "inj": "{ad}", "meas": "{ad}",
                        "options": ["no_meas_current", "no_rotate_meas"]},
    # Swisstom BB2 / Sentec LuMon: skip 4 ([0, 5]) drive and measurement (M = 928 on 32)
    "eidors-skip4": {"kind": "eidors", "inj": [0, 5], "meas": [0, 5],
                     "options": ["no_meas_current", "no_rotate_meas"]},
    # and without the measurements next to a driven electrode (M = 736 on 32)
    "eidors-skip4-next1": {"kind": "eidors", "inj": [0, 5], "meas": [0, 5],
                           "options": ["no_meas_current_next1", "no_rotate_meas"]},
}
DEFAULT_PROTOCOL = "skip4"

_PROTOCOL_ADAPTER: Any = None


def _validate(data: dict[str, Any]) -> AnyProtocol:
    global _PROTOCOL_ADAPTER
    if _PROTOCOL_ADAPTER is None:
        from pydantic import TypeAdapter

        _PROTOCOL_ADAPTER = TypeAdapter(ProtocolSpec)
    return _PROTOCOL_ADAPTER.validate_python(data)


def resolve_protocol(value: Any = None) -> AnyProtocol:
    """A protocol spec from None (default), a preset name, "skipK", a YAML/JSON path or a dict."""
    if isinstance(value, (ExplicitProtocol, SkipProtocol, EidorsProtocol)):
        return value
    if value is None:
        value = DEFAULT_PROTOCOL
    if isinstance(value, (str, Path)):
        name = str(value)
        if name in PROTOCOL_PRESETS:
            return _validate(PROTOCOL_PRESETS[name])
        if name.startswith("skip") and name[4:].isdigit():
            k = int(name[4:])
            return _validate({"kind": "skip", "injection_skip": k, "measurement_skip": k})
        if Path(name).is_file():
            return resolve_protocol(load_spec_file(name))
        raise ValueError(f"protocol: unknown preset or file {name!r}; presets: "
                         f"{', '.join(PROTOCOL_PRESETS)} or skipK")
    if isinstance(value, dict):
        return _validate(value)
    raise TypeError(f"protocol: cannot build a spec from {type(value).__name__}")
