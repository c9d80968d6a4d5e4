"""A session's recent raw frames for its live data-quality report (`quality.py`), and the
electrodes excluded from its reconstruction now.

Two spans: the report's noise, reciprocity and usable-channel scores cover the last `window`
frames; its drift check (`worker.devices.quality.electrode_drift`) needs a longer stretch and
covers the frames of the last `drift_seconds` by their timestamps (a timestamp that goes back
starts that stretch anew).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

import numpy as np

from service.contract.codecs import SessionQuality
from worker.devices.quality import QualityReport, electrode_drift, quality_report

if TYPE_CHECKING:
    from service.contract.protocol import Protocol
    from worker.devices.consistency import ProtocolCheck

MIN_FRAMES = 8  # the noise estimate needs a few frames beyond its second difference
DRIFT_SECONDS = 30.0


class QualityWindow:
    """A session's recent raw frames, when the next report is due, and what is excluded."""

    def __init__(self, window: int, every: int, drift_seconds: float = DRIFT_SECONDS) -> None:
        self.frames: deque[np.ndarray] = deque(maxlen=window)
        self.stretch: deque[tuple[float, np.ndarray]] = deque()  # (timestamp, frame)
        self.drift_seconds = drift_seconds
        self.every = every
        self.since = 0  # frames observed since the last report
        self.seq = -1
        self.excluded: tuple[int, ...] = ()  # electrodes, 0-based

    def observe(self, voltages: np.ndarray, seq: int, timestamp: float | None = None) -> None:
        self.frames.append(voltages)
        self.since += 1
        self.seq = seq
        if timestamp is None or self.drift_seconds <= 0:
            return
        if self.stretch and timestamp <= self.stretch[-1][0]:
            self.stretch.clear()
        self.stretch.append((timestamp, voltages))
        while timestamp - self.stretch[0][0] > self.drift_seconds:
            self.stretch.popleft()

    @property
    def due(self) -> bool:
        return self.since >= self.every and len(self.frames) >= MIN_FRAMES

    def report(self, protocol: Protocol) -> QualityReport:
        self.since = 0
        with np.errstate(divide="ignore", invalid="ignore"):
            report = quality_report(np.stack(self.frames).astype(np.float64), protocol.currents,
                                    protocol.meas_injection, protocol.meas_weights)
            if len(self.stretch) >= MIN_FRAMES:
                times = np.array([t for t, _ in self.stretch])
                frames = np.stack([v for _, v in self.stretch]).astype(np.float64)
                report.add_drift(electrode_drift(frames, times, protocol.currents,
                                                 protocol.meas_injection, protocol.meas_weights))
        return report

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
