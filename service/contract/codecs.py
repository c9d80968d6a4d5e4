"""Every encoder and decoder of what the API and the worker put into Redis.

The encoders are the writers of record: the Lua scripts (`scripts`) append the frame-stream
entries and results these functions build (passed as ARGV), and compose the lease value with
`LEASE_SEPARATOR`, so the Python and the Lua sides cannot drift apart.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Self

import numpy as np

from service.contract.fields import (
    RESULT_KINDS,
    ControlField,
    FrameField,
    FrameKind,
    ParametersField,
    ResultField,
)

FRAME_DTYPE = np.dtype("<f4")  # voltages on the wire and in the frame stream
VOLUME_DTYPES = {"float16": np.dtype("<f2"), "float32": np.dtype("<f4")}
LEASE_SEPARATOR = ":"  # lease value "<epoch>:<worker id>"


def flat(entry: Mapping[str, bytes]) -> list[str | bytes]:
    """An entry's fields as the flat field, value, ... list that the scripts take as ARGV."""
    return [x for item in entry.items() for x in item]


# --- frame stream ------------------------------------------------------------------------------

@dataclass(frozen=True)
class FrameEntry:
    kind: FrameKind
    seq: int | None = None
    timestamp: float | None = None
    voltages: np.ndarray | None = None  # float32, read-only view


def voltages_bytes(voltages: np.ndarray) -> bytes:
    return np.ascontiguousarray(voltages, dtype=FRAME_DTYPE).tobytes()


def encode_frame(seq: int, timestamp: float, voltages: np.ndarray) -> dict[str, bytes]:
    """Fields of one frame entry (the ingest script appends them)."""
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
    kind = text(f[FrameField.KIND.value])
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
    breath_start_seq: int | None = None  # `tidal` results: the breath's end-expiration frame
    breath_start_ts: float | None = None

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
    """Fields for `XADD results_key(sid) MAXLEN ~ RESULTS_MAXLEN * ...` (the commit script
    fills in `latency_ms` and `lag_frames` from the Redis clock and the counters)."""
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
        **({} if r.breath_start_seq is None else {
            ResultField.BREATH_START_SEQ.value: str(int(r.breath_start_seq)).encode(),
            ResultField.BREATH_START_TS.value: repr(float(r.breath_start_ts or 0.0)).encode()}),
    }


def decode_result(fields: Mapping[Any, Any]) -> Result:
    """A Result from XREAD fields; raises ValueError when the entry is malformed."""
    f = _str_keys(fields)
    try:
        shape = tuple(int(s) for s in text(f[ResultField.SHAPE.value]).split(","))
        dtype = text(f[ResultField.DTYPE.value])
        data = bytes(f[ResultField.DATA.value])
        loss_raw = text(f.get(ResultField.LOSS.value, b""))
        r = Result(
            seq=int(f[ResultField.SEQ.value]),
            timestamp=float(f[ResultField.TIMESTAMP.value]),
            kind=text(f[ResultField.KIND.value]),
            method=text(f[ResultField.METHOD.value]),
            iterations=int(f.get(ResultField.ITERATIONS.value, b"0")),
            loss=float(loss_raw) if loss_raw else None,
            latency_ms=float(f[ResultField.LATENCY_MS.value]),
            lag_frames=int(f.get(ResultField.LAG_FRAMES.value, b"0")),
            shape=shape,  # type: ignore[arg-type]
            dtype=dtype,
            data=data,
            worker=text(f.get(ResultField.WORKER.value, b"")),
            epoch=int(f.get(ResultField.EPOCH.value, b"0")),
            breath_start_seq=(int(f[ResultField.BREATH_START_SEQ.value])
                              if ResultField.BREATH_START_SEQ.value in f else None),
            breath_start_ts=(float(f[ResultField.BREATH_START_TS.value])
                             if ResultField.BREATH_START_TS.value in f else None),
        )
    except (KeyError, ValueError) as e:
        raise ValueError(f"result: malformed entry ({e})") from e
    if len(shape) != 3 or dtype not in VOLUME_DTYPES:
        raise ValueError("result: shape must be P,R,C and dtype float16 or float32")
    if len(data) != math.prod(shape) * VOLUME_DTYPES[dtype].itemsize:
        raise ValueError("result: data length does not match shape and dtype")
    return r


# --- parameters stream ------------------------------------------------------------------------

@dataclass(frozen=True)
class ParametersEntry:
    """One breath's parameters (`breath` is the JSON document, see docs/worker.md)."""

    seq: int  # the breath's last frame
    breath: dict[str, Any]
    worker: str = ""
    epoch: int = 0


def encode_parameters(p: ParametersEntry) -> dict[str, bytes]:
    """Fields for `XADD parameters_key(sid) MAXLEN ~ PARAMETERS_MAXLEN * ...` (standard JSON:
    nan and infinity are refused)."""
    return {ParametersField.SEQ.value: str(int(p.seq)).encode(),
            ParametersField.BREATH.value: json.dumps(p.breath, separators=(",", ":"),
                                                     allow_nan=False).encode(),
            ParametersField.WORKER.value: p.worker.encode(),
            ParametersField.EPOCH.value: str(int(p.epoch)).encode()}


def decode_parameters(fields: Mapping[Any, Any]) -> ParametersEntry:
    """A ParametersEntry from XREAD/XRANGE fields; ValueError when the entry is malformed."""
    f = _str_keys(fields)
    try:
        breath = json.loads(f[ParametersField.BREATH.value])
        entry = ParametersEntry(seq=int(f[ParametersField.SEQ.value]), breath=breath,
                                worker=text(f.get(ParametersField.WORKER.value, b"")),
                                epoch=int(f.get(ParametersField.EPOCH.value, b"0")))
    except (KeyError, ValueError) as e:
        raise ValueError(f"parameters: malformed entry ({e})") from e
    if not isinstance(breath, dict):
        raise ValueError("parameters: the breath field must hold a JSON object")
    return entry


# --- JSON reports of the progress hash (fields `quality`, `warmup`) ----------------------------

class JsonReport(ABC):
    """A frozen dataclass kept as one JSON object in the progress hash: `to_json`, and
    `from_json` through the class's `parse` of the decoded object."""

    NAME = ""  # the progress field, for error messages

    def to_json(self) -> str:
        return json.dumps(self.__dict__, separators=(",", ":"), sort_keys=True,
                          allow_nan=False)

    @classmethod
    def from_json(cls, raw: str | bytes) -> Self:
        """ValueError when malformed."""
        try:
            return cls.parse(json.loads(raw))
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            raise ValueError(f"{cls.NAME}: malformed ({e})") from e

    @classmethod
    @abstractmethod
    def parse(cls, d: dict[str, Any]) -> Self:
        """The report of the decoded JSON object; KeyError, TypeError or ValueError."""


@dataclass(frozen=True)
class SessionQuality(JsonReport):
    """The worker's data-quality report on a session's recent frames: electrodes 1-based in
    the model's numbering; the bad ones are excluded from the reconstruction. The session-start
    check of the reference against the model (`worker.devices.consistency`) adds its overall
    correlation and, when it is low, a warning (absent in older summaries)."""

    NAME = "quality"

    bad_electrodes: list[int]
    usable_fraction: float  # of the channels
    median_relative_noise: float  # channel noise / level, the median over channels
    flags: dict[str, list[str]]  # electrode (1-based, as text) -> reasons
    frames: int  # frames the report covers
    seq: int  # the newest of them
    model_correlation: float | None = None  # reference vs the model's homogeneous voltages
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, d: dict[str, Any]) -> SessionQuality:
        return cls(bad_electrodes=[int(e) for e in d["bad_electrodes"]],
                   usable_fraction=float(d["usable_fraction"]),
                   median_relative_noise=float(d["median_relative_noise"]),
                   flags={str(k): [str(r) for r in v] for k, v in d["flags"].items()},
                   frames=int(d["frames"]), seq=int(d["seq"]),
                   model_correlation=(None if d.get("model_correlation") is None
                                      else float(d["model_correlation"])),
                   warnings=[str(w) for w in d.get("warnings", [])])


@dataclass(frozen=True)
class WarmupProgress(JsonReport):
    """How far the session's main method is in its warm start (e.g. D2IP's UPWS): `done` of
    `total` iterations at `updated_at` (unix seconds); `done == total` once it is over."""

    NAME = "warmup"

    step: str  # what runs, for people: "D2IP warm start"
    done: int
    total: int
    updated_at: float

    @classmethod
    def parse(cls, d: dict[str, Any]) -> WarmupProgress:
        return cls(step=str(d["step"]), done=int(d["done"]), total=int(d["total"]),
                   updated_at=float(d["updated_at"]))


# --- lease and control -------------------------------------------------------------------------

@dataclass(frozen=True)
class Lease:
    worker: str
    epoch: int


def encode_lease(worker: str, epoch: int) -> bytes:
    """Lease value `"<epoch>:<worker id>"` (the acquire script composes the same)."""
    return f"{int(epoch)}{LEASE_SEPARATOR}{worker}".encode()


def decode_lease(raw: bytes | str) -> Lease:
    epoch, _, worker = text(raw).partition(LEASE_SEPARATOR)
    return Lease(worker=worker, epoch=int(epoch))


def encode_control(kind: Literal["open"], sid: str, at: float) -> dict[str, bytes]:
    return {ControlField.TYPE.value: kind.encode(), ControlField.SESSION.value: sid.encode(),
            ControlField.AT.value: repr(float(at)).encode()}


def decode_control(fields: Mapping[Any, Any]) -> tuple[str, str, float]:
    f = _str_keys(fields)
    return (text(f[ControlField.TYPE.value]), text(f[ControlField.SESSION.value]),
            float(f[ControlField.AT.value]))


# --- stream ids and raw values -----------------------------------------------------------------

def stream_id_key(entry_id: bytes | str) -> tuple[int, int]:
    """A stream entry id `"<ms>-<seq>"` as a pair that sorts like the ids."""
    ms, _, seq = text(entry_id).partition("-")
    return int(ms), int(seq or 0)


def stream_id_ms(entry_id: bytes | str) -> int:
    """The millisecond timestamp part of a stream entry id (its XADD time)."""
    return stream_id_key(entry_id)[0]


def text(value: Any) -> str:
    """A Redis reply value (bytes or str) as str."""
    return value.decode() if isinstance(value, (bytes, bytearray, memoryview)) else str(value)


def _str_keys(fields: Mapping[Any, Any]) -> dict[str, Any]:
    return {text(k): v for k, v in fields.items()}
