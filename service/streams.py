"""The Redis contract between the API and the reconstruction worker: key names, stream entry
fields, and encode/decode helpers. Torch-free (numpy only); the worker imports this module.

Every per-session key carries the session id as a Redis Cluster hash tag (`{sid}`), so all keys
of one session live in one slot and the Lua scripts that touch several of them stay atomic.

Per session `sid` (32 lowercase hex digits):

- `eitmon:session:{sid}` HASH, written by the API (fields: `SessionField`). `config` holds the
  resolved settings as JSON (`SessionConfig`), so the worker needs nothing else to start.
- `eitmon:counters:{sid}` HASH of integers. The API increments `accepted`, `duplicate`,
  `rejected` and `rejected:<reason>`; the worker increments `reconstructed`, `coalesced` and
  `failures`.
- `eitmon:frames:{sid}` STREAM, appended by the API only, one entry per frame (`encode_frame`),
  plus in-band `reference` and `close` entries in the order they happened (the `close` entry is
  the worker's close message). Consumer group `WORKER_GROUP` is created by the API with the
  session (from id 0). The API never trims it; the worker XACKs what it processed and trims
  (XTRIM MINID / XDEL) only entries older than the frames its latest weight checkpoint still
  needs for a replay.
- `eitmon:results:{sid}` STREAM, appended by the worker with `XADD ... MAXLEN ~ RESULTS_MAXLEN`
  (`encode_result`); the API reads it with XREAD for the viewers.
- `eitmon:progress:{sid}` HASH, written by the worker after each processed frame (`ProgressField`).
- `eitmon:lease:{sid}` STRING, the worker's ownership lease (`encode_lease`), set with
  `SET ... NX PX`; `eitmon:epoch:{sid}` is the fencing counter (INCR on every acquisition).

Global:

- `eitmon:sessions` ZSET of session ids scored by creation time (unix seconds).
- `eitmon:control` STREAM with one entry per OPEN session (`encode_control`), so XLEN = open
  sessions (the autoscaler's signal; never capped). Workers claim sessions with
  `XREADGROUP GROUP WORKER_GROUP <worker> ... STREAMS eitmon:control >` and leave the entry
  pending while they own the session; a dead worker's entries are taken over with XAUTOCLAIM
  once its lease expired. Closing a session XACKs and XDELs its entry (id in the session hash
  field `control_id`); a worker that claims an entry whose session is closed or gone XACKs and
  XDELs it itself. The group is created at id 0 with MKSTREAM by whoever comes first (the API
  on the first session; BUSYGROUP is fine).

Retention: closing a session sets `expires_at` in its hash and EXPIREs its keys after
`Settings.session_retention_s` (24 h by default); a worker that creates a key of a closed
session afterwards (results, progress) sets `EXPIREAT expires_at` on it too.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal

import numpy as np

PREFIX = "eitmon"
WORKER_GROUP = "eitmon-workers"  # consumer group on the control stream and every frame stream
RESULTS_MAXLEN = 200

FRAME_DTYPE = np.dtype("<f4")  # voltages on the wire and in the frame stream
VOLUME_DTYPES = {"float16": np.dtype("<f2"), "float32": np.dtype("<f4")}
METHODS = ("d2ip", "d2ip-scaled", "dip", "rsip", "tv", "tikhonov")
REALTIME_POLICIES = ("realtime", "complete")
RESULT_KINDS = ("preview", "volume")


# --- key names -------------------------------------------------------------------------------

def _tagged(kind: str, sid: str) -> str:
    return f"{PREFIX}:{kind}:{{{sid}}}"


def session_key(sid: str) -> str:
    return _tagged("session", sid)


def counters_key(sid: str) -> str:
    return _tagged("counters", sid)


def frames_key(sid: str) -> str:
    return _tagged("frames", sid)


def results_key(sid: str) -> str:
    return _tagged("results", sid)


def progress_key(sid: str) -> str:
    return _tagged("progress", sid)


def lease_key(sid: str) -> str:
    return _tagged("lease", sid)


def epoch_key(sid: str) -> str:
    return _tagged("epoch", sid)


def session_keys(sid: str) -> list[str]:
    """Every key of a session that closing puts under the retention expiry."""
    return [session_key(sid), counters_key(sid), frames_key(sid), results_key(sid),
            progress_key(sid), epoch_key(sid)]


SESSIONS_INDEX = f"{PREFIX}:sessions"
CONTROL_STREAM = f"{PREFIX}:control"


# --- session hash ------------------------------------------------------------------------------

class SessionField(str, Enum):
    """Fields of `eitmon:session:{sid}`."""

    STATUS = "status"  # SessionStatus: "open" | "closed" | "failed"
    CREATED_AT = "created_at"  # unix seconds
    CLOSED_AT = "closed_at"
    EXPIRES_AT = "expires_at"  # unix seconds, set on close
    CONFIG = "config"  # JSON, see SessionConfig
    N_MEASUREMENTS = "n_measurements"  # M
    PATIENT_LABEL = "patient_label"  # pseudonymous; never logged
    LAST_SEQ = "last_seq"  # highest accepted seq, -1 before the first frame
    REFERENCE = "reference"  # latest explicit reference, M x float32 LE (absent if none)
    REFERENCE_VERSION = "reference_version"  # 0 until an explicit reference is set
    CONTROL_ID = "control_id"  # id of the session's entry in the control stream
    FAILURE_REASON = "failure_reason"  # why a worker marked the session failed (no patient data)


class SessionStatus(str, Enum):
    """Values of the session hash's `status`."""

    OPEN = "open"
    CLOSED = "closed"  # by the API (DELETE)
    FAILED = "failed"  # by a worker, after `failures` reached its limit


class Counter(str, Enum):
    """Fields of `eitmon:counters:{sid}`; `rejected:<reason>` fields hold the breakdown."""

    ACCEPTED = "accepted"  # frames queued (API)
    DUPLICATE = "duplicate"  # frames acknowledged as duplicates, not queued (API)
    REJECTED = "rejected"  # rejected frame requests, all reasons (API)
    RECONSTRUCTED = "reconstructed"  # frames turned into a D2IP volume (worker)
    COALESCED = "coalesced"  # frames skipped under the "realtime" policy (worker)
    FAILURES = "failures"  # failed attempts at the session (worker)


REJECTED_PREFIX = "rejected:"


class ProgressField(str, Enum):
    """Fields of `eitmon:progress:{sid}`, written by the worker."""

    LAST_ID = "last_id"  # frame-stream id of the last frame reconstructed or coalesced
    LAST_SEQ = "last_seq"
    UPDATED_AT = "updated_at"  # unix seconds
    WORKER = "worker"
    EPOCH = "epoch"


@dataclass(frozen=True)
class SessionConfig:
    """The resolved settings of a session (JSON in the `config` field).

    geometry and protocol are complete spec dicts: `resolve_geometry(cfg.geometry)` and
    `resolve_protocol(cfg.protocol)` rebuild them. reference is {"mode": "first_n", "frames": N}
    (average the first N frames) or {"mode": "explicit"} (an in-band `reference` entry comes
    first in the frame stream). realtime: "realtime" lets the worker coalesce a backlog (skip
    to the newest frame, counting the skipped ones as `coalesced`); "complete" reconstructs
    every frame.
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

    def to_json(self) -> str:
        d = self.__dict__.copy()
        d["grid"] = list(self.grid)
        return json.dumps(d, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes) -> SessionConfig:
        d = json.loads(raw)
        d["grid"] = tuple(d["grid"])
        return cls(**d)


# --- frame stream ------------------------------------------------------------------------------

class FrameField(str, Enum):
    KIND = "kind"  # "frame" | "reference" | "close"
    SEQ = "seq"  # decimal integer (frames only)
    TIMESTAMP = "ts"  # device time, seconds, float repr (frames only)
    VOLTAGES = "v"  # M x float32 little-endian (frames and references)


FrameKind = Literal["frame", "reference", "close"]


@dataclass(frozen=True)
class FrameEntry:
    kind: FrameKind
    seq: int | None = None
    timestamp: float | None = None
    voltages: np.ndarray | None = None  # float32, read-only view


def voltages_bytes(voltages: np.ndarray) -> bytes:
    return np.ascontiguousarray(voltages, dtype=FRAME_DTYPE).tobytes()


def encode_frame(seq: int, timestamp: float, voltages: np.ndarray) -> dict[str, bytes]:
    """Fields of one frame entry (the API's Lua script writes the same fields)."""
    return {FrameField.KIND.value: b"frame", FrameField.SEQ.value: str(int(seq)).encode(),
            FrameField.TIMESTAMP.value: repr(float(timestamp)).encode(),
            FrameField.VOLTAGES.value: voltages_bytes(voltages)}


def encode_reference(voltages: np.ndarray) -> dict[str, bytes]:
    return {FrameField.KIND.value: b"reference",
            FrameField.VOLTAGES.value: voltages_bytes(voltages)}


def encode_close() -> dict[str, bytes]:
    return {FrameField.KIND.value: b"close"}


def decode_frame_entry(fields: Mapping[Any, Any]) -> FrameEntry:
    """A frame-stream entry from XREAD/XREADGROUP fields (bytes or str keys)."""
    f = _str_keys(fields)
    kind = _text(f[FrameField.KIND.value])
    if kind == "close":
        return FrameEntry("close")
    volts = np.frombuffer(f[FrameField.VOLTAGES.value], dtype=FRAME_DTYPE)
    if kind == "reference":
        return FrameEntry("reference", voltages=volts)
    if kind != "frame":
        raise ValueError(f"frame stream: unknown entry kind {kind!r}")
    return FrameEntry("frame", seq=int(f[FrameField.SEQ.value]),
                      timestamp=float(f[FrameField.TIMESTAMP.value]), voltages=volts)


# --- results stream ----------------------------------------------------------------------------

class ResultField(str, Enum):
    SEQ = "seq"
    TIMESTAMP = "ts"  # device time of the frame, seconds
    KIND = "kind"  # "preview" (fast linear) | "volume" (D2IP)
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


@dataclass(frozen=True)
class Result:
    """One published volume. `data` holds the raw little-endian bytes in (P, R, C) C order."""

    seq: int
    timestamp: float
    kind: str
    method: str
    iterations: int
    loss: float | None
    latency_ms: float
    lag_frames: int
    shape: tuple[int, int, int]
    dtype: str
    data: bytes = field(repr=False)
    worker: str = ""
    epoch: int = 0

    @classmethod
    def from_volume(cls, volume: np.ndarray, *, dtype: str = "float16", **meta: Any) -> Result:
        """Build from a (P, R, C) array; meta holds the remaining fields."""
        if volume.ndim != 3:
            raise ValueError(f"result: expected a (P, R, C) volume, got shape {volume.shape}")
        arr = np.ascontiguousarray(volume, dtype=VOLUME_DTYPES[dtype])
        return cls(shape=tuple(int(s) for s in arr.shape), dtype=dtype, data=arr.tobytes(),
                   **meta)

    @property
    def volume(self) -> np.ndarray:
        """The (P, R, C) array, a read-only view of `data`."""
        return np.frombuffer(self.data, dtype=VOLUME_DTYPES[self.dtype]).reshape(self.shape)


def encode_result(r: Result) -> dict[str, bytes]:
    """Fields for `XADD results_key(sid) MAXLEN ~ RESULTS_MAXLEN * ...`."""
    if r.kind not in RESULT_KINDS:
        raise ValueError(f"result: kind must be one of {RESULT_KINDS}")
    return {
        ResultField.SEQ.value: str(int(r.seq)).encode(),
        ResultField.TIMESTAMP.value: repr(float(r.timestamp)).encode(),
        ResultField.KIND.value: r.kind.encode(),
        ResultField.METHOD.value: r.method.encode(),
        ResultField.ITERATIONS.value: str(int(r.iterations)).encode(),
        ResultField.LOSS.value: b"" if r.loss is None else repr(float(r.loss)).encode(),
        ResultField.LATENCY_MS.value: repr(float(r.latency_ms)).encode(),
        ResultField.LAG_FRAMES.value: str(int(r.lag_frames)).encode(),
        ResultField.SHAPE.value: ",".join(str(int(s)) for s in r.shape).encode(),
        ResultField.DTYPE.value: r.dtype.encode(),
        ResultField.DATA.value: r.data,
        ResultField.WORKER.value: r.worker.encode(),
        ResultField.EPOCH.value: str(int(r.epoch)).encode(),
    }


def decode_result(fields: Mapping[Any, Any]) -> Result:
    """A Result from XREAD fields; raises ValueError when the entry is malformed."""
    f = _str_keys(fields)
    try:
        shape = tuple(int(s) for s in _text(f[ResultField.SHAPE.value]).split(","))
        dtype = _text(f[ResultField.DTYPE.value])
        data = bytes(f[ResultField.DATA.value])
        loss_raw = _text(f.get(ResultField.LOSS.value, b""))
        r = Result(
            seq=int(f[ResultField.SEQ.value]),
            timestamp=float(f[ResultField.TIMESTAMP.value]),
            kind=_text(f[ResultField.KIND.value]),
            method=_text(f[ResultField.METHOD.value]),
            iterations=int(f.get(ResultField.ITERATIONS.value, b"0")),
            loss=float(loss_raw) if loss_raw else None,
            latency_ms=float(f[ResultField.LATENCY_MS.value]),
            lag_frames=int(f.get(ResultField.LAG_FRAMES.value, b"0")),
            shape=shape,  # type: ignore[arg-type]
            dtype=dtype,
            data=data,
            worker=_text(f.get(ResultField.WORKER.value, b"")),
            epoch=int(f.get(ResultField.EPOCH.value, b"0")),
        )
    except (KeyError, ValueError) as e:
        raise ValueError(f"result: malformed entry ({e})") from e
    if len(shape) != 3 or dtype not in VOLUME_DTYPES:
        raise ValueError("result: shape must be P,R,C and dtype float16 or float32")
    if len(data) != math.prod(shape) * VOLUME_DTYPES[dtype].itemsize:
        raise ValueError("result: data length does not match shape and dtype")
    return r


# --- lease and control -------------------------------------------------------------------------

@dataclass(frozen=True)
class Lease:
    worker: str
    epoch: int


def encode_lease(worker: str, epoch: int) -> bytes:
    """Lease value `"<epoch>:<worker id>"`."""
    return f"{int(epoch)}:{worker}".encode()


def decode_lease(raw: bytes | str) -> Lease:
    epoch, _, worker = _text(raw).partition(":")
    return Lease(worker=worker, epoch=int(epoch))


class ControlField(str, Enum):
    TYPE = "type"  # "open" (the only kind so far)
    SESSION = "session"
    AT = "at"  # unix seconds


def encode_control(kind: Literal["open"], sid: str, at: float) -> dict[str, bytes]:
    return {ControlField.TYPE.value: kind.encode(), ControlField.SESSION.value: sid.encode(),
            ControlField.AT.value: repr(float(at)).encode()}


def decode_control(fields: Mapping[Any, Any]) -> tuple[str, str, float]:
    f = _str_keys(fields)
    return (_text(f[ControlField.TYPE.value]), _text(f[ControlField.SESSION.value]),
            float(f[ControlField.AT.value]))


# --- helpers -----------------------------------------------------------------------------------

def stream_id_ms(entry_id: bytes | str) -> int:
    """The millisecond timestamp part of a stream entry id."""
    return int(_text(entry_id).split("-", 1)[0])


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, (bytes, bytearray, memoryview)) else str(v)


def _str_keys(fields: Mapping[Any, Any]) -> dict[str, Any]:
    return {_text(k): v for k, v in fields.items()}
