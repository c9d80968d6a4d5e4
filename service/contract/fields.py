"""Every field name of the session's hashes and streams, and the values of its status and kind
fields. The Lua scripts (`scripts`) render their field names from these enums."""

from __future__ import annotations

from enum import Enum
from typing import Literal


class SessionStatus(str, Enum):
    """Values of `SessionField.STATUS`."""

    OPEN = "open"  # accepts frames
    CLOSED = "closed"  # closed by the API (DELETE); its keys expire after the retention period
    FAILED = "failed"  # marked by a worker that could not reconstruct it (see FAILURE_REASON)


class SessionField(str, Enum):
    """Fields of `eitmon:session:{sid}`."""

    STATUS = "status"  # a SessionStatus value
    CREATED_AT = "created_at"  # unix seconds
    CLOSED_AT = "closed_at"
    EXPIRES_AT = "expires_at"  # unix seconds, set on close
    CONFIG = "config"  # JSON, see SessionConfig
    N_MEASUREMENTS = "n_measurements"  # M
    PATIENT_LABEL = "patient_label"  # pseudonymous; never logged
    BED = "bed"  # where the patient lies (ward/bed), shown by the viewer; never logged
    LAST_SEQ = "last_seq"  # highest accepted seq, -1 before the first frame
    REFERENCE = "reference"  # latest explicit reference, M x float32 LE (absent if none)
    REFERENCE_VERSION = "reference_version"  # 0 until an explicit reference is set
    CONTROL_ID = "control_id"  # id of the session's entry in the control stream
    FAILURE_REASON = "failure_reason"  # short text, set by the worker with status "failed"
    CLOSE_REASON = "close_reason"  # a CloseReason value, set on close


class CloseReason(str, Enum):
    """Values of `SessionField.CLOSE_REASON`: who closed the session."""

    DELETED = "deleted"  # DELETE /v1/sessions/{id}
    IDLE = "idle"  # the API's idle expiry: no frame for `Settings.idle_timeout_s`


class Counter(str, Enum):
    """Fields of `eitmon:counters:{sid}`; `rejected:<reason>` and `dropped:<reason>` fields
    hold the breakdowns."""

    ACCEPTED = "accepted"  # frames queued (API)
    DUPLICATE = "duplicate"  # frames acknowledged as duplicates, not queued (API)
    REJECTED = "rejected"  # rejected frame requests, all reasons (API)
    RECONSTRUCTED = "reconstructed"  # frames turned into a D2IP volume (worker)
    COALESCED = "coalesced"  # frames not reconstructed one by one: skipped under "realtime",
    # or folded into their breath under "breath" (worker)
    FAILURES = "failures"  # reconstruction failures of the session (worker)
    DROPPED = "dropped"  # accepted frames never turned into a volume, all reasons (worker)


REJECTED_PREFIX = "rejected:"
DROPPED_PREFIX = "dropped:"


class DropReason(str, Enum):
    """Why the worker dropped an accepted frame (`dropped:<reason>`, counted, never published)."""

    NON_FINITE = "non_finite"  # its volume held NaN or Inf (e.g. a near-zero reference)
    CLOSED_UNBUILT = "closed_unbuilt"  # the session closed before its model was ever built


class ProgressField(str, Enum):
    """Fields of `eitmon:progress:{sid}`, written by the worker."""

    LAST_ID = "last_id"  # frame-stream id of the last frame reconstructed or coalesced
    LAST_SEQ = "last_seq"
    UPDATED_AT = "updated_at"  # unix seconds
    WORKER = "worker"
    EPOCH = "epoch"
    METHOD = "method"  # the main method in use
    CHECKPOINT = "checkpoint"  # file name of the committed weight checkpoint
    CHECKPOINT_ID = "checkpoint_id"  # the last frame-stream id that checkpoint covers
    QUALITY = "quality"  # JSON: the live data-quality summary (`codecs.SessionQuality`)
    WARMUP = "warmup"  # JSON: the main method's warm-start progress (`codecs.WarmupProgress`)


class FrameField(str, Enum):
    """Fields of the entries of `eitmon:frames:{sid}`."""

    KIND = "kind"  # a FrameKind
    SEQ = "seq"  # decimal integer (frames only)
    TIMESTAMP = "ts"  # device time, seconds, float repr (frames only)
    VOLTAGES = "v"  # M x float32 little-endian (frames and references)


FrameKind = Literal["frame", "reference", "close"]


class ResultField(str, Enum):
    """Fields of the entries of `eitmon:results:{sid}`."""

    SEQ = "seq"
    TIMESTAMP = "ts"  # device time of the frame, seconds
    KIND = "kind"  # one of RESULT_KINDS
    METHOD = "method"
    ITERATIONS = "iterations"
    LOSS = "loss"  # empty when not applicable
    LATENCY_MS = "latency_ms"  # frame accepted -> volume published
    LAG_FRAMES = "lag_frames"  # frames still queued behind this one when published
    SHAPE = "shape"  # "P,R,C"
    DTYPE = "dtype"  # "float16" | "float32"
    DATA = "data"  # the volume, little-endian, C order over (P, R, C)
    WORKER = "worker"
    EPOCH = "epoch"
    BREATH_START_SEQ = "breath_start_seq"  # `tidal` only: seq of the breath's end-expiration
    BREATH_START_TS = "breath_start_ts"  # `tidal` only: its device time (SEQ/TIMESTAMP: the
    # end-inspiration frame)


# fast linear preview | the main method's volume | the main method's tidal image of a breath
# (`breath` policy: the end-inspiration minus the preceding end-expiration frame)
RESULT_KINDS = ("preview", "volume", "tidal")


class ParametersField(str, Enum):
    """Fields of the entries of `eitmon:parameters:{sid}`, one per breath (`breath` policy)."""

    SEQ = "seq"  # the breath's last frame (its end of expiration)
    BREATH = "breath"  # JSON: the breath's parameters (docs/worker.md, "Parameters stream")
    WORKER = "worker"
    EPOCH = "epoch"


class ControlField(str, Enum):
    """Fields of the entries of `eitmon:control`."""

    TYPE = "type"  # "open" (the only kind so far)
    SESSION = "session"
    AT = "at"  # unix seconds


ENUMS: tuple[type[Enum], ...] = (SessionStatus, SessionField, Counter, ProgressField,
                                 FrameField, ResultField, ControlField, CloseReason,
                                 ParametersField)
