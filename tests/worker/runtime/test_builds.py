"""Cold model builds run in a separate process: they block no other session, a close cancels
them, a build that fails fails its session at once, and a closed session is never built."""

from __future__ import annotations

import multiprocessing
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from service.contract.fields import SessionField
from service.contract.keys import WORKER_GROUP, frames_key, lease_key, session_key
from worker.forward import cache
from worker.forward.model import ForwardModel
from worker.runtime.builds import is_cached

if TYPE_CHECKING:
    from conftest import Bed, Running

FIRST = {"mode": "first_n", "frames": 1}
# never in the throwaway cache of a test: a default-size model (a build of 25 s or more)
LARGE = {"geometry": {"preset": "thorax-2x16", "mesh_size": 0.009}, "protocol": "skip4",
         "grid": [4, 8, 8]}
SMALL_UNCACHED = {"geometry": {"preset": "thorax-1x16", "mesh_size": 0.03}, "protocol": "skip4",
                  "grid": [4, 8, 8]}


@pytest.fixture
def fresh_cache(small_model: ForwardModel, tmp_path: Path,
                monkeypatch: pytest.MonkeyPatch) -> Path:
    """A model cache that holds only the small model of the other sessions."""
    folder = tmp_path / "cache"
    assert small_model.cache_path is not None
    for path in (small_model.cache_path, cache.operator_path(small_model.cache_path)):
        if path.is_file():
            (folder / "models").mkdir(parents=True, exist_ok=True)
            shutil.copy(path, folder / "models" / path.name)
    monkeypatch.setenv("EITMON_CACHE_DIR", str(folder))
    return folder


def frames(n: int, m: int) -> np.ndarray:
    return np.linspace(1.0, 2.0, m, dtype=np.float32)[None, :].repeat(n, axis=0)


def builds() -> list[multiprocessing.process.BaseProcess]:
    return [p for p in multiprocessing.active_children() if p.name == "eitmon-model-build"]


def test_a_cold_build_blocks_no_other_session_and_a_close_cancels_it(
        bed: Bed, in_process: Callable[..., Running], lsq: dict[str, Any],
        fresh_cache: Path) -> None:
    run = in_process(lsq)
    large = bed.create(**LARGE, reference=FIRST)
    bed.post(large, frames(2, 928), 0)
    bed.wait(lambda: bool(builds()), "the large model's build to start")
    small = bed.create()  # opened after the large one, its model cached
    bed.post(small, bed.frames(5), 0)
    bed.wait(lambda: bed.settled(small, 5), "the small session, during the large build")
    assert builds() and bed.results(large) == []  # still building, apart
    bed.close(large)
    bed.wait(lambda: not builds() and not bed.redis.exists(lease_key(large)),
             "the close to cancel the build")
    assert bed.info(large)["counters"]["dropped_by_reason"] == {"closed_unbuilt": 2}
    assert bed.settled(large, 2) and not is_cached(LARGE)
    assert [session.sid for session in run.worker.registry.sessions()] == [small]


@pytest.mark.parametrize(("settings", "spec", "reason"), [
    ({"build_timeout_s": 0.5}, SMALL_UNCACHED,  # shorter than starting the build process
     "BuildFailed: the model build took longer than 0.5 s"),
    ({"build_memory_mb": 1024}, {**SMALL_UNCACHED, "protocol": "adjacent", "grid": [64, 64, 64]},
     "BuildFailed: MemoryError: the model build needs more than 1024 MiB"),
])
def test_a_build_that_fails_fails_its_session_at_once(
        bed: Bed, in_process: Callable[..., Running], lsq: dict[str, Any], fresh_cache: Path,
        settings: dict[str, Any], spec: dict[str, Any], reason: str) -> None:
    in_process(lsq, **settings)
    sid = bed.create(**spec, reference=FIRST)
    bed.wait(lambda: bed.info(sid)["status"] == "failed", "the session to be marked failed")
    got = bed.redis.hget(session_key(sid), SessionField.FAILURE_REASON.value).decode()
    assert got.startswith(reason), got
    assert bed.counters(sid)["failures"] == 1  # no retries: the same build fails again
    assert not builds()


def test_a_closed_session_is_never_taken_over_to_build(
        bed: Bed, in_process: Callable[..., Running], lsq: dict[str, Any],
        fresh_cache: Path) -> None:
    sid = bed.create(**SMALL_UNCACHED, reference=FIRST)
    bed.post(sid, frames(3, 208), 0)
    bed.close(sid)  # before any worker ran: the takeover scan finds its frames
    run = in_process(lsq)
    bed.wait(lambda: bed.settled(sid, 3) and not bed.redis.exists(lease_key(sid)),
             "the closed session's frames to be counted")
    assert bed.counters(sid)["dropped:closed_unbuilt"] == 3
    assert bed.redis.xpending(frames_key(sid), WORKER_GROUP)["pending"] == 0
    assert not is_cached(SMALL_UNCACHED) and not builds()
    assert not run.worker.registry.leases()
