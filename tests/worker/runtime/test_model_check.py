"""The session-start check of the reference against the model (issue 19 §1), through the real
API, a worker and valkey: the right protocol passes and shows its correlation; frames with the
current sign flipped fail the session with a reason that says what to check."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from service.contract.fields import Counter, SessionField
from service.contract.keys import session_key
from worker.devices.consistency import WARN_BELOW

if TYPE_CHECKING:
    from conftest import Bed, Running

FIRST_N = {"mode": "first_n", "frames": 4}


def test_the_right_protocol_passes_and_shows_its_correlation(
        bed: Bed, in_process: Callable[..., Running], lsq: dict[str, Any]) -> None:
    in_process(lsq, quality_window=16, quality_every=8)
    sid = bed.create(reference=FIRST_N)
    bed.post(sid, bed.frames(16), 0)
    bed.wait(lambda: bed.settled(sid, 16), "the counters")
    bed.wait(lambda: (bed.info(sid)["quality"] or {}).get("seq") == 15, "the last report")
    quality = bed.info(sid)["quality"]
    assert quality["model_correlation"] > WARN_BELOW and quality["warnings"] == []
    assert bed.info(sid)["status"] == "open"


def test_a_flipped_current_sign_fails_the_session(
        bed: Bed, in_process: Callable[..., Running], lsq: dict[str, Any]) -> None:
    run = in_process(lsq, retry_backoff_s=0.05)
    bad = bed.create(reference=FIRST_N)
    bed.post(bad, -bed.frames(8), 0)  # what a protocol with the other current sign measures
    bed.wait(lambda: bed.redis.hget(session_key(bad), "status") == b"failed",
             "the session to be marked failed")
    reason = bed.redis.hget(session_key(bad), SessionField.FAILURE_REASON.value).decode()
    assert reason.startswith("ProtocolMismatch: the reference anti-correlates"), reason
    assert "(r = -1.000)" in reason and "current sign" in reason and "electrode order" in reason
    counters = bed.counters(bad)
    assert counters[Counter.FAILURES.value] == 1  # refused for good, not retried
    assert counters.get("reconstructed", 0) == 0  # no frame went against that reference
    good = bed.create()
    bed.post(good, bed.frames(3), 0)
    bed.wait(lambda: bed.settled(good, 3), "a healthy session on the same worker")
    assert run.thread.is_alive()
