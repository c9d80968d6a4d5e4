"""What a device-format reader returns: frames in protocol order, plus what the file says."""

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
    frame_rate in frames/s when the file (or its sidecar) states it, else None;
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

    @property
    def n_frames(self) -> int:
        return int(self.voltages.shape[0])
