"""A session's recent raw frames for its live data-quality report (`quality.py`), and the
electrodes excluded from its reconstruction now."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

import numpy as np

from service.contract.codecs import SessionQuality
from worker.devices.quality import QualityReport, quality_report

if TYPE_CHECKING:
    from service.contract.protocol import Protocol
    from worker.devices.consistency import ProtocolCheck

MIN_FRAMES = 8  # the noise estimate needs a few frames beyond its second difference


class QualityWindow:
    """A session's recent raw frames, when the next report is due, and what is excluded."""

    def __init__(self, window: int, every: int) -> None:
        self.frames: deque[np.ndarray] = deque(maxlen=window)
        self.every = every
        self.since = 0  # frames observed since the last report
        self.seq = -1
        self.excluded: tuple[int, ...] = ()  # electrodes, 0-based

    def observe(self, voltages: np.ndarray, seq: int) -> None:
        self.frames.append(voltages)
        self.since += 1
        self.seq = seq

    @property
    def due(self) -> bool:
        return self.since >= self.every and len(self.frames) >= MIN_FRAMES

    def report(self, protocol: Protocol) -> QualityReport:
        self.since = 0
        with np.errstate(divide="ignore", invalid="ignore"):
            return quality_report(np.stack(self.frames).astype(np.float64), protocol.currents,
                                  protocol.meas_injection, protocol.meas_weights)

    def summary(self, report: QualityReport, model_check: ProtocolCheck | None = None
                ) -> SessionQuality:
        """The report's summary, with the session's reference check when it has one."""
        noise = float(np.nanmedian(report.relative_noise))
        return SessionQuality(
            bad_electrodes=[e + 1 for e in report.flagged],
            usable_fraction=round(report.usable_fraction, 4),
            median_relative_noise=round(noise, 6) if np.isfinite(noise) else 0.0,
            flags={str(e + 1): reasons for e, reasons in sorted(report.flags.items())},
            frames=len(self.frames), seq=self.seq,
            model_correlation=(round(model_check.overall, 4) if model_check is not None
                               and np.isfinite(model_check.overall) else None),
            warnings=[model_check.message] if model_check is not None
            and model_check.verdict == "warn" else [])
