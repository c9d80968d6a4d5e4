"""What a device-format reader returns (frames in protocol order, plus what the file says), and
the helpers the readers share: a bounds-checked byte reader and channel selection by pairs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True, eq=False)
class DeviceFile:
    """One device file, read.

    voltages (T, M) in the order of `protocol` (an explicit protocol dict or a preset name) in
    the device's electrode numbering; model_electrode[i]: the geometry's electrode index (our
    numbering: docs/forward-model.md) where the device's electrode i sits, None when the same;
    frame_rate in frames/s when the file (or its sidecar) states it, else None; frame_times
    (T,) seconds from the first frame when the file time-stamps its frames, else None;
    reciprocals_measured: whether each reciprocal pair was measured separately (False when the
    device stored one of each pair and the reader filled in the other);
    details: JSON-serialisable facts from the file (per-injection currents, sidecar fields).
    """

    format: str
    device: str
    voltages: np.ndarray
    protocol: dict[str, Any] | str
    protocol_description: str
    frame_rate: float | None
    reciprocals_measured: bool
    model_electrode: list[int] | None = None
    details: dict[str, Any] = field(default_factory=dict)
    frame_times: np.ndarray | None = None

    @property
    def n_frames(self) -> int:
        return int(self.voltages.shape[0])

    @property
    def n_electrodes(self) -> int:
        """Electrodes the protocol uses (the highest index + 1); 0 for a preset name."""
        if not isinstance(self.protocol, dict):
            return 0
        used = [e for item in (*self.protocol["injections"], *self.protocol["measurements"])
                for e in item["electrodes"]]
        return max(used) + 1


class DeviceFormatError(ValueError):
    """The file is not in the layout its reader knows, or is cut short; the message says where."""


class ByteReader:
    """Little- or big-endian values from a byte string; reading past the end raises
    DeviceFormatError naming the file, the offset and what was being read."""

    def __init__(self, data: bytes, name: str, endian: str = "<") -> None:
        self.data, self.name, self.endian, self.pos = data, name, endian, 0

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, size: int, what: str) -> bytes:
        if size < 0 or self.pos + size > len(self.data):
            raise DeviceFormatError(
                f"{self.name}: truncated: {what} needs {size} bytes at byte {self.pos}, the "
                f"file has {len(self.data)}")
        chunk = self.data[self.pos:self.pos + size]
        self.pos += size
        return chunk

    def array(self, dtype: str, count: int, what: str) -> np.ndarray:
        """`count` values of `dtype` (numpy code without byte order, e.g. 'i4', 'f8')."""
        kind = np.dtype(self.endian + dtype)
        return np.frombuffer(self.take(kind.itemsize * count, what), dtype=kind)

    def scalar(self, dtype: str, what: str) -> int | float:
        return self.array(dtype, 1, what)[0].item()

    def seek(self, pos: int, what: str) -> None:
        if not 0 <= pos <= len(self.data):
            raise DeviceFormatError(f"{self.name}: truncated: {what} at byte {pos}, the file "
                                    f"has {len(self.data)}")
        self.pos = pos


def pair_key(protocol: dict[str, Any], m: dict[str, Any]) -> tuple[tuple[int, ...], ...]:
    """(driven electrodes, measured electrodes) of measurement `m`, as sorted tuples."""
    drive = protocol["injections"][m["injection"]]["electrodes"]
    return tuple(sorted(drive)), tuple(sorted(m["electrodes"]))


def channel_index(source: dict[str, Any], target: dict[str, Any]) -> np.ndarray:
    """For each measurement of `target`, the index of the same (driven pair, measured pair) in
    `source`: `values[:, channel_index(source, target)]` reorders or selects channels."""
    where = {pair_key(source, m): k for k, m in enumerate(source["measurements"])}
    return np.array([where[pair_key(target, m)] for m in target["measurements"]])
