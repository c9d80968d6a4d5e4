"""Pessimistic execution: a session whose main method raises is retried, then marked failed,
and the worker and its other sessions go on (an in-process worker on the real server)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from service.contract.fields import Counter, SessionField
from service.contract.keys import (
    CONTROL_STREAM,
    lease_key,
    parameters_key,
    session_key,
    session_keys,
)

if TYPE_CHECKING:
    from conftest import Bed, Running

K = 3  # the frame the faulty method raises on


def test_a_session_that_keeps_failing_is_marked_failed_and_the_worker_goes_on(
        bed: Bed, in_process: Callable[..., Running], test_methods: dict[str, Any]) -> None:
    methods = {"tikhonov": test_methods["PseudoInverse"],
               "tv": partial(test_methods["FailsOnFrame"], k=K)}
    run = in_process(methods, retry_backoff_s=0.05, max_session_failures=3)
    bad, good = bed.create(method="tv"), bed.create()
    control_id = bed.redis.hget(session_key(bad), SessionField.CONTROL_ID.value)
    frames = bed.frames(10)
    bed.post(bad, frames, 0)
    bed.post(good, frames[:5], 0)

    def field(name: SessionField) -> str | None:
        value = bed.redis.hget(session_key(bad), name.value)
        return value.decode() if value is not None else None

    bed.wait(lambda: field(SessionField.STATUS) == "failed",
             "the faulty session to be marked failed")
    assert field(SessionField.FAILURE_REASON) == f"RuntimeError: poison frame {K}"
    counters = bed.counters(bad)
    assert counters[Counter.FAILURES.value] == 3
    assert counters["reconstructed"] == K  # each retry replayed the first K frames silently
    assert not bed.redis.exists(lease_key(bad))
    ids = [i for i, _ in bed.redis.xrange(CONTROL_STREAM)]
    assert control_id not in ids  # no worker claims it again
    expires_at = float(field(SessionField.EXPIRES_AT) or 0)
    for key in session_keys(bad):
        if key == parameters_key(bad):  # only the `breath` policy writes it
            assert not bed.redis.exists(key)
            continue
        assert bed.redis.expiretime(key) == int(-(-expires_at // 1)), key

    # the worker and its other session go on
    bed.post(good, frames[5:], 5)
    bed.wait(lambda: bed.settled(good, 10), "the healthy session")
    assert run.thread.is_alive() and not run.worker.stopping.is_set()
    assert [session.sid for session in run.worker.registry.sessions()] == [good]
    assert bed.counters(good)[Counter.FAILURES.value] == 0


def unbuildable(model: Any) -> Any:
    raise ValueError("no operator for this grid")


def test_a_session_whose_method_cannot_be_built_fails_in_setup(
        bed: Bed, in_process: Callable[..., Running], lsq: dict[str, Any]) -> None:
    run = in_process({**lsq, "rsip": unbuildable}, retry_backoff_s=0.05)
    bad = bed.create(method="rsip")
    bed.post(bad, bed.frames(2), 0)
    bed.wait(lambda: bed.redis.hget(session_key(bad), "status") == b"failed",
             "the session to be marked failed")
    reason = bed.redis.hget(session_key(bad), SessionField.FAILURE_REASON.value)
    assert reason == b"ValueError: no operator for this grid"
    assert bed.counters(bad)[Counter.FAILURES.value] == 3
    assert bed.counters(bad)["reconstructed"] == 0
    good = bed.create()
    bed.post(good, bed.frames(3), 0)
    bed.wait(lambda: bed.settled(good, 3), "a healthy session on the same worker")
    assert run.thread.is_alive()
