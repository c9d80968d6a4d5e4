"""Request and response bodies of the HTTP API, with OpenAPI examples."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.contract.belts import BeltName
from service.contract.fields import CloseReason, SessionStatus
from service.contract.geometry import resolve_geometry
from service.contract.patient import PatientSpec, Position
from service.contract.protocol import resolve_protocol
from service.contract.session import Method, RealtimePolicy

SID_EXAMPLE = "5f0c6a8e2b3d4c1f9a7e6d5c4b3a2918"
_NUMBERS = {"type": "array", "items": {"type": "number"}}


def _examples(*examples: dict[str, Any]) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": list(examples)})


# --- requests ----------------------------------------------------------------------------------

class FirstNReference(BaseModel):
    """Reference = mean of the first N accepted frames (computed by the worker)."""

    model_config = ConfigDict(extra="forbid")
    mode: Literal["first_n"] = "first_n"
    frames: int = Field(1, ge=1, le=10_000, description="N")


class ExplicitReference(BaseModel):
    """Reference = these M voltages (float32, finite)."""

    model_config = ConfigDict(extra="forbid")
    mode: Literal["explicit"]
    voltages: list[Any] = Field(json_schema_extra=_NUMBERS, description="M values, V")


ReferencePolicy = Annotated[FirstNReference | ExplicitReference, Field(discriminator="mode")]


class SessionCreate(BaseModel):
    """Every field has a default: `{}` opens a session on the standard 2x16 thorax belt."""

    model_config = ConfigDict(extra="forbid")
    geometry: str | dict[str, Any] = Field(
        "thorax-2x16", description="preset name or a full/partial GeometrySpec (key 'preset' "
                                   "names a base preset); file paths are not accepted")
    protocol: str | dict[str, Any] = Field(
        "skip4", description="preset name (skip4, adjacent, skipK, ...) or a protocol spec")
    belt: BeltName | None = Field(
        None, description="belt profile (docs/forward-model.md, 'Belt profiles'): sets the "
                          "electrodes and, unless `protocol` is given, the protocol; the "
                          "thorax is the patient's. Not together with `geometry`")
    patient: PatientSpec | None = Field(
        None, description="the patient's thorax: age group, chest circumference or width and "
                          "depth, weight, an outline polygon; builds the thorax with the belt "
                          "(default eitmon-2x16). Not together with `geometry`")
    position: Position = Field(
        "supine", description="the patient's position: gravity's direction for the "
                              "dependent/non-dependent parameters (supine, prone, "
                              "left-lateral: lying on the left side, right-lateral)")
    grid: list[int] | dict[str, int] = Field(
        [16, 32, 32], description="voxel grid [P, R, C] or {planes, rows, cols}")
    method: Method = Field(
        "d2ip", description="main reconstruction method: d2ip (the paper's fixed lambda), "
                            "d2ip-scaled (per-frame lambda scaled with the data), d2ip-live "
                            "(every frame in one forward pass of a per-patient network kept "
                            "fine-tuned by D2IP's objective), edip (Educated DIP: pretrained, "
                            "the preview as input), dip, rsip, tv, tikhonov, greit, inr-tv, "
                            "diff-inr (implicit neural representation with TV or the "
                            "diffusion prior)")
    reference: ReferencePolicy = Field(default_factory=FirstNReference)
    realtime: RealtimePolicy | None = Field(
        None, description="realtime: the worker may coalesce a backlog (counted); "
                          "complete: every frame is reconstructed; breath: one main-method "
                          "tidal image per breath (result kind `tidal`) and the breath's "
                          "parameters, the preview at frame rate. Default: breath for d2ip, "
                          "d2ip-scaled and edip, realtime for the other methods")
    patient_label: str | None = Field(
        None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9 ._:/#-]+$",
        description="pseudonymous bed/patient label (never logged)")
    bed: str | None = Field(
        None, min_length=1, max_length=32, pattern=r"^[A-Za-z0-9 ._:/#-]+$",
        description="the bed (ward and bed, e.g. ICU-3 7), shown by the viewer (never logged)")


SESSION_CREATE_EXAMPLES = {
    "defaults": {"summary": "all defaults", "value": {}},
    "custom": {"summary": "single ring, complete policy", "value": {
        "geometry": "thorax-1x32", "protocol": "adjacent", "grid": [8, 32, 32],
        "method": "d2ip", "reference": {"mode": "first_n", "frames": 10},
        "realtime": "complete", "patient_label": "P-0042", "bed": "ICU-3 7"}},
    "patient": {"summary": "a clinical belt on a child's thorax, prone", "value": {
        "belt": "goettingen-16", "method": "tikhonov",
        "patient": {"age_group": "child", "chest_circumference": 0.62, "weight_kg": 25},
        "position": "prone"}},
    "spec": {"summary": "a geometry spec from a preset", "value": {
        "geometry": {"preset": "thorax-2x16", "domain": {"kind": "thorax", "width": 0.34}},
        "protocol": {"kind": "skip", "injection_skip": 4, "measurement_skip": 4,
                     "reciprocal": "drop"}}},
}


# M of a session opened with every default (928), so that the documented examples are accepted
DEFAULT_M = resolve_protocol(SessionCreate.model_fields["protocol"].default).build(
    resolve_geometry(SessionCreate.model_fields["geometry"].default).electrodes.count
).n_measurements
EXAMPLE_VOLTAGES = [round(0.01 + 1e-5 * i, 5) for i in range(DEFAULT_M)]


class ReferenceBody(BaseModel):
    """An explicit reference frame, M finite values."""

    model_config = ConfigDict(extra="forbid", **_examples({"voltages": EXAMPLE_VOLTAGES}))
    voltages: list[Any] = Field(json_schema_extra=_NUMBERS, description="M values, V")


# --- responses ---------------------------------------------------------------------------------

class Counters(BaseModel):
    accepted: int = Field(description="frames queued")
    duplicate: int = Field(description="frames acknowledged as duplicates, not queued")
    reconstructed: int = Field(description="frames reconstructed by the worker")
    coalesced: int = Field(description="frames skipped under the realtime policy, or folded "
                                       "into their breath under the breath policy")
    rejected: int = Field(description="rejected frame requests (a batch counts once)")
    failures: int = Field(description="reconstruction failures counted by the worker")
    rejected_by_reason: dict[str, int]
    dropped: int = Field(description="accepted frames the worker dropped, never published "
                                        "(a non-finite volume; closed before its model was "
                                        "built)")
    dropped_by_reason: dict[str, int]


class Lag(BaseModel):
    frames: int = Field(description="accepted - reconstructed - coalesced - dropped")
    seconds: float | None = Field(
        description="age of the oldest unprocessed frame (0 when none, null if unknown)")


class WorkerInfo(BaseModel):
    id: str
    epoch: int
    lease_ttl_ms: int


SESSION_EXAMPLE: dict[str, Any] = {
    "id": SID_EXAMPLE, "status": "open", "failure_reason": None, "created_at": 1767225600.0,
    "closed_at": None,
    "close_reason": None, "expires_at": None, "patient_label": "P-0042", "bed": "ICU-3 7",
    "n_electrodes": 32,
    "n_measurements": 928, "grid": [16, 32, 32], "mask_shape": [16, 32, 32],
    "settings": {"geometry_preset": "thorax-2x16", "geometry": {"...": "full spec"},
                 "protocol_preset": "skip4", "protocol": {"kind": "skip", "...": "..."},
                 "grid": [16, 32, 32], "method": "d2ip",
                 "reference": {"mode": "first_n", "frames": 1}, "realtime": "breath"},
    "reference_version": 0, "last_seq": 41,
    "counters": {"accepted": 42, "duplicate": 0, "reconstructed": 40, "coalesced": 0,
                 "rejected": 1, "failures": 0, "rejected_by_reason": {"non_finite": 1},
                 "dropped": 0, "dropped_by_reason": {}},
    "lag": {"frames": 2, "seconds": 0.05},
    "worker": {"id": "worker-a1", "epoch": 3, "lease_ttl_ms": 9000},
    "quality": {"bad_electrodes": [4], "usable_fraction": 0.72, "median_relative_noise": 0.002,
                "flags": {"4": ["noisy", "few usable channels"]}, "frames": 64, "seq": 40},
    "warmup": {"step": "D2IP warm start", "done": 1800, "total": 1800,
               "updated_at": 1767225650.1}}


class QualityInfo(BaseModel):
    """The worker's live data-quality report on the session's recent frames."""

    bad_electrodes: list[int] = Field(
        description="flagged electrodes (1-based, the model's numbering), excluded from the "
                    "reconstruction")
    usable_fraction: float = Field(description="fraction of channels usable (level above 2 % "
                                               "of the median, relative noise below 5 %)")
    median_relative_noise: float = Field(description="channel noise / level, median")
    flags: dict[str, list[str]] = Field(description="electrode -> reasons (noisy, "
                                                    "reciprocity, few usable channels)")
    frames: int = Field(description="frames the report covers")
    seq: int = Field(description="the newest of them")
    model_correlation: float | None = Field(
        None, description="correlation of the session's reference with the model's "
                          "homogeneous voltages (checked when the reference is set); null "
                          "before that")
    warnings: list[str] = Field(default_factory=list,
                                description="warnings on the session's data, e.g. a reference "
                                            "that correlates weakly with the model")


class WarmupInfo(BaseModel):
    """How far the main method's warm start (D2IP's UPWS) got."""

    step: str = Field(description="what runs, e.g. \"D2IP warm start\"")
    done: int = Field(description="iterations done; equal to total once it is over")
    total: int = Field(description="iterations in all")
    updated_at: float = Field(description="when the worker wrote it (unix seconds)")


class SessionInfo(BaseModel):
    model_config = _examples(SESSION_EXAMPLE)

    id: str
    status: SessionStatus = Field(description="open; closed (DELETE); failed (by the worker)")
    failure_reason: str | None = Field(
        None, description="why the worker marked the session failed (null otherwise)")
    created_at: float
    closed_at: float | None
    close_reason: CloseReason | None = Field(
        None, description="deleted (DELETE) or idle (no frame for the idle timeout)")
    expires_at: float | None = Field(description="when a closed session's keys expire")
    patient_label: str | None
    bed: str | None = Field(None, description="the bed, as given at creation")
    n_electrodes: int
    n_measurements: int = Field(description="M, values per frame")
    grid: list[int] = Field(description="[P, R, C]")
    mask_shape: list[int] = Field(description="shape of volumes and of the voxel mask")
    settings: dict[str, Any]
    reference_version: int = Field(description="0 until an explicit reference is set")
    last_seq: int | None
    counters: Counters
    lag: Lag
    worker: WorkerInfo | None = Field(description="the worker holding the lease, if any")
    quality: QualityInfo | None = Field(
        None, description="the live data-quality report (null until the worker made one)")
    warmup: WarmupInfo | None = Field(
        None, description="the main method's warm-start progress (null unless this session "
                          "ran one: none was needed, or it was loaded from the store)")


class SessionList(BaseModel):
    model_config = _examples({"sessions": [SESSION_EXAMPLE],
                              "next_cursor": f"1767225600.0-{SID_EXAMPLE}"})
    sessions: list[SessionInfo]
    next_cursor: str | None = Field(
        None, description="pass as ?cursor= for the next page; null on the last page")


class FramesAck(BaseModel):
    model_config = _examples({"accepted": 2, "duplicates": [], "last_seq": 1, "lag_frames": 2},
                             {"accepted": 1, "duplicates": [0, 1], "last_seq": 2,
                              "lag_frames": 1})
    accepted: int = Field(description="frames queued by this request")
    duplicates: list[int] = Field(description="seqs acknowledged but not queued (<= last seq)")
    last_seq: int = Field(description="highest accepted seq of the session")
    lag_frames: int = Field(description="frames queued and not yet processed")


class ReferenceAck(BaseModel):
    model_config = _examples({"reference_version": 1, "n_measurements": 928})
    reference_version: int
    n_measurements: int
