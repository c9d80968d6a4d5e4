"""A simulated belt: replay a recording to the API at a frame rate, as a device would.

Torch-free (numpy, httpx). Frames go out as they fall due (frame i at start + i / rate), in
batches of `batch` frames, as binary float32 bodies (or JSON); a failed request is retried with
the same seqs, which the API acknowledges as duplicates if it had already queued them. Any other
duplicate means that the session already holds seqs this belt never sent (another sender, or
an earlier run): the belt stops with a BeltError rather than stream frames nobody will see.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

from worker.recording import Recording

RETRIES = 8


class BeltError(RuntimeError):
    """The API refused a request (the message carries its reason)."""


@dataclass
class Progress:
    """What the belt has sent so far."""

    sent: int = 0  # frames the API accepted
    duplicates: int = 0
    lag_frames: int = 0  # the API's lag after the latest post
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0


def session_body(recording: Recording, **settings: Any) -> dict[str, Any]:
    """POST /v1/sessions for this recording: its specs, its reference as the explicit one."""
    meta = recording.meta
    body = {"geometry": meta["geometry"], "protocol": meta["protocol"], "grid": meta["grid"],
            "reference": {"mode": "explicit", "voltages": recording.reference.tolist()}}
    return {**body, **{k: v for k, v in settings.items() if v is not None}}


class Belt:
    """Streams one recording to one session."""

    def __init__(self, client: httpx.Client, recording: Recording, rate: float = 20.0,
                 batch: int = 1, binary: bool = True) -> None:
        if rate <= 0 or batch < 1:
            raise ValueError("rate must be positive and batch at least 1")
        self.client, self.recording = client, recording
        self.rate, self.batch, self.binary = rate, batch, binary
        self.voltages = np.ascontiguousarray(recording.voltages, dtype="<f4")

    def open_session(self, **settings: Any) -> str:
        """Create a session for the recording (needs sessions:admin); its id."""
        return self._request("POST", "/v1/sessions",
                             json=session_body(self.recording, **settings))["id"]

    def set_reference(self, sid: str) -> None:
        """Make the recording's reference the session's explicit reference (from the next
        frame on)."""
        self._request("PUT", f"/v1/sessions/{sid}/reference",
                      json={"voltages": self.recording.reference.tolist()})

    def next_seq(self, sid: str) -> int:
        """The seq after the session's last one (0 when the token may not read sessions)."""
        r = self.client.get(f"/v1/sessions/{sid}")
        if r.status_code in (401, 403):
            return 0
        _raise_for(r)
        last = r.json()["last_seq"]
        return 0 if last is None else last + 1

    def stream(self, sid: str, seq0: int = 0, loop: bool = False,
               stop: threading.Event | None = None,
               report: Callable[[Progress], None] | None = None) -> Progress:
        """Send the recording (again and again with `loop`) until done or `stop` is set;
        `report` is called about once a second."""
        stop = stop or threading.Event()
        progress = Progress()
        n = self.recording.n_frames
        times = self.recording.frame_times - self.recording.frame_times[0]
        period = float(times[-1]) + 1.0 / self.rate
        start = time.monotonic()
        reported = start
        i = 0
        while not stop.is_set() and (loop or i < n):
            count = self.batch if loop else min(self.batch, n - i)
            due = start + (i + count - 1) / self.rate
            if stop.wait(max(due - time.monotonic(), 0.0)):
                break
            idx = [(i + k) % n for k in range(count)]
            stamps = [float(times[j]) + ((i + k) // n) * period for k, j in enumerate(idx)]
            ack = self._post(sid, seq0 + i, self.voltages[idx], stamps)
            progress.sent += ack["accepted"]
            progress.duplicates += len(ack["duplicates"])
            progress.lag_frames = ack["lag_frames"]
            progress.seconds = time.monotonic() - start
            i += count
            if report and time.monotonic() - reported >= 1.0:
                reported = time.monotonic()
                report(progress)
        return progress

    def _post(self, sid: str, seq: int, frames: np.ndarray, stamps: list[float]
              ) -> dict[str, Any]:
        path = f"/v1/sessions/{sid}/frames"
        if self.binary:
            headers = {"Content-Type": "application/octet-stream",
                       "X-Frame-Count": str(len(frames)), "X-Seq-Start": str(seq),
                       "X-Timestamp-Start": repr(stamps[0])}
            if len(frames) > 1:
                headers["X-Frame-Interval"] = repr(1.0 / self.rate)
            ack, retried = self._send("POST", path, content=frames.tobytes(), headers=headers)
        else:
            body = {"frames": [{"seq": seq + k, "timestamp": t, "voltages": f.tolist()}
                               for k, (f, t) in enumerate(zip(frames, stamps, strict=True))]}
            ack, retried = self._send("POST", path, json=body)
        if ack["duplicates"] and not retried:
            dups = ack["duplicates"]
            raise BeltError(f"POST {path}: the session already holds seqs {dups[0]}.."
                            f"{dups[-1]} (last seq {ack['last_seq']}) that this belt did not "
                            f"send: another sender, or an earlier run (to continue a session, "
                            f"use a token that may also read it)")
        return ack

    def _request(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        """A request, retried on 503 and transport errors; BeltError on a refusal."""
        return self._send(method, path, **kw)[0]

    def _send(self, method: str, path: str, **kw: Any) -> tuple[dict[str, Any], bool]:
        """`_request`, and whether it was sent more than once (so a duplicate may be ours)."""
        delay = 0.1
        for attempt in range(RETRIES):
            try:
                r = self.client.request(method, path, **kw)
            except httpx.TransportError:
                if attempt == RETRIES - 1:
                    raise
            else:
                if r.status_code != 503:
                    _raise_for(r)
                    return r.json(), attempt > 0
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
        raise BeltError(f"{method} {path}: the API stayed unavailable")


def _raise_for(r: httpx.Response) -> None:
    if r.is_success:
        return
    try:
        reason = r.json()["error"]["reason"]
    except (ValueError, KeyError, TypeError):
        reason = r.reason_phrase
    raise BeltError(f"{r.request.method} {r.request.url.path}: {r.status_code} {reason}")
