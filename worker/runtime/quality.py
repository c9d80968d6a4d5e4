"""Live data quality per session (issue 19 §3): the recording's quality report, run on the
session's recent frames, flags bad electrodes on the session and takes them out of its
reconstruction.

Every `EITMON_QUALITY_EVERY` frames the compute thread runs `worker.devices.quality.
quality_report` (per-electrode contact quality from the measurements that use each electrode
and, where the protocol measures both, from reciprocity; noise per channel; the usable
fraction) on the session's last `EITMON_QUALITY_WINDOW` raw frames (and its drift check on the
frames of the last `EITMON_QUALITY_DRIFT_S` seconds), and writes the summary
(`SessionQuality`, electrodes 1-based in the model's numbering) into the session's progress
hash, fenced like every other write; the API shows it in `GET /v1/sessions/{id}` and sends it to
the viewers as a `status` message.

When the flagged set changes, the session's main reconstructor and its preview are rebuilt on
`weighted_model(model, DataWeighting(exclude=...))`, the model variant whose data weights are
zero on every channel that drives or measures with a flagged electrode (what `eitmon
reconstruct --exclude-electrodes` does offline); the main method's state (e.g. D2IP's network)
and its warm-start reporter are carried over. A session with electrodes excluded gets a
preview of its own instead of the one shared by every session on the model. When more than
`MAX_EXCLUDED_FRACTION` of the electrodes are flagged, nothing is excluded (the belt as a whole
is off; the flag still shows).
A worker that takes a session over starts without exclusions and finds them again after one
window of frames.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from service.contract.fields import ProgressField
from worker.recon.weighting import DataWeighting, weighted_model
from worker.runtime.methods import MethodTable, SharedPreview
from worker.runtime.quality_window import DRIFT_SECONDS, QualityWindow

if TYPE_CHECKING:
    from worker.runtime.fenced import Fenced
    from worker.runtime.session import Frame, Session

log = logging.getLogger("eitmon.worker")

Retry = Callable[["Session", Callable[[], Any]], Any]
MAX_EXCLUDED_FRACTION = 0.25


class QualityMonitor:
    """Runs the sessions' reports when due (compute thread), publishes them, and swaps the
    reconstructors of a session whose flagged electrodes changed."""

    def __init__(self, fenced: Fenced, methods: MethodTable, preview_method: str, window: int,
                 every: int, drift_seconds: float = DRIFT_SECONDS) -> None:
        self.fenced, self.methods, self.preview_method = fenced, methods, preview_method
        self.window, self.every, self.drift_seconds = window, every, drift_seconds

    def step(self, session: Session, frames: list[Frame], retry: Retry) -> None:
        """Observe the frames the compute thread took; report and act when due; `retry` runs
        the fenced write (the compute thread's `retry`)."""
        if session.quality is None:
            session.quality = QualityWindow(self.window, self.every, self.drift_seconds)
        live = session.quality
        for frame in frames:
            if not frame.silent and frame.voltages is not None:
                live.observe(frame.voltages, frame.seq, frame.timestamp)
        if not live.due:
            return
        report = live.report(session.model.protocol)
        summary = live.summary(report, session.model_check)
        retry(session, lambda: self.fenced.commit(
            session.sid, session.lease.value,
            progress={ProgressField.QUALITY.value: summary.to_json()}))
        flagged = tuple(report.flagged)
        if len(flagged) > MAX_EXCLUDED_FRACTION * session.model.geometry.electrodes.count:
            flagged = ()
        if flagged != live.excluded:
            self.exclude(session, flagged)

    def exclude(self, session: Session, electrodes: tuple[int, ...]) -> None:
        """Rebuild the session's main reconstructor and preview without `electrodes`."""
        model = weighted_model(session.model, DataWeighting(exclude=electrodes))
        main = self.methods.build(session.main_method, model,
                                  tidal=session.config.realtime == "breath")
        main.load_state_dict(session.main.state_dict())
        main.on_warmup = session.main.on_warmup
        session.main = main
        session.preview = (SharedPreview(self.methods.build(self.preview_method, model))
                           if electrodes else session.shared_preview)
        assert session.quality is not None
        session.quality.excluded = electrodes
        log.info("session %s: electrodes %s excluded", session.sid,
                 ", ".join(str(e + 1) for e in electrodes) or "none")
