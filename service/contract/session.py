"""The resolved configuration of a session (the `config` field of its hash), and the values
its settings accept."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal, get_args

Method = Literal["d2ip", "d2ip-scaled", "d2ip-live", "edip", "dip", "rsip", "tv", "tikhonov",
                 "greit", "inr-tv", "diff-inr"]
METHODS: tuple[str, ...] = get_args(Method)  # the main methods a session may ask for
RealtimePolicy = Literal["realtime", "complete", "breath"]
REALTIME_POLICIES: tuple[str, ...] = get_args(RealtimePolicy)
BREATH_DEFAULT_METHODS = ("d2ip", "d2ip-scaled", "edip", "inr-tv", "diff-inr")  # `breath` default


def default_policy(method: str) -> str:
    """The policy of a session that names none: `breath` for D2IP, else `realtime`."""
    return "breath" if method in BREATH_DEFAULT_METHODS else "realtime"


@dataclass(frozen=True)
class SessionConfig:
    """The resolved settings of a session (JSON in the `config` field).

    geometry and protocol are complete spec dicts: `resolve_geometry(cfg.geometry)` and
    `resolve_protocol(cfg.protocol)` rebuild them. reference is {"mode": "first_n", "frames": N}
    (average the first N frames) or {"mode": "explicit"} (an in-band `reference` entry comes
    first in the frame stream). realtime: "realtime" lets the worker coalesce a backlog (skip
    to the newest frame, counting the skipped ones as `coalesced`); "complete" reconstructs
    every frame; "breath" reconstructs each breath's tidal difference (end-inspiration minus
    end-expiration frame) with the main method and counts every frame as `coalesced` (the
    preview stays at frame rate; `default_policy` gives the default). belt and patient record
    what the geometry was built from (`service.contract.patient.patient_geometry`); position is
    the patient's (`PatientSpec.position`), supine unless stated.
    """

    geometry: dict[str, Any]
    protocol: dict[str, Any]
    grid: tuple[int, int, int]
    method: str
    reference: dict[str, Any]
    realtime: str
    n_electrodes: int
    n_measurements: int
    geometry_preset: str | None = None
    protocol_preset: str | None = None
    belt: str | None = None  # the belt profile the geometry and protocol came from
    patient: dict[str, Any] | None = None  # the PatientSpec the thorax was built from
    position: str = "supine"  # the patient's position: gravity for the clinical parameters

    def to_json(self) -> str:
        d = self.__dict__.copy()
        d["grid"] = list(self.grid)
        return json.dumps(d, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes) -> SessionConfig:
        d = json.loads(raw)
        d["grid"] = tuple(d["grid"])
        return cls(**d)
