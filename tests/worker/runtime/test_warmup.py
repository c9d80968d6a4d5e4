"""The main method's warm-start progress (issue 16): a session whose D2IP warm start (UPWS)
runs in a real worker shows "how far" in its progress hash and in `GET /v1/sessions/{id}`
before its first volume, and the warm start's end after it."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.contract.codecs import WarmupProgress
from service.contract.fields import ProgressField
from service.contract.keys import progress_key
from worker.recon.base import get_method
from worker.recon.d2ip.reconstructor import WARM_START_STEP

if TYPE_CHECKING:
    from conftest import Bed, Running

COLD = 100  # UPWS iterations: a few seconds on the small model, several progress writes


def test_a_d2ip_warm_start_shows_its_progress_before_the_first_volume(
        bed: Bed, in_process: Callable[..., Running], test_methods: dict[str, Any],
        tmp_path: Path) -> None:
    d2ip = partial(get_method("d2ip"), iterations=(COLD, 2, 2),
                   warm_start_dir=tmp_path / "warm")  # empty store: this session runs UPWS
    sid = bed.create(method="d2ip", realtime="complete")
    in_process({"tikhonov": test_methods["PseudoInverse"], "d2ip": d2ip})
    bed.post(sid, bed.frames(2), 0)
    during: list[WarmupProgress] = []  # what the hash held while no volume was out yet

    def first_volume() -> bool:
        raw = bed.redis.hget(progress_key(sid), ProgressField.WARMUP.value)
        if bed.results(sid):
            return True
        if raw is not None:
            during.append(WarmupProgress.from_json(raw))
        time.sleep(0.02)
        return False

    bed.wait(first_volume, "the first volume")
    assert during, "no warm-start progress before the first volume"
    assert all(p.step == WARM_START_STEP and p.total == COLD and 0 < p.done <= COLD
               for p in during)
    assert any(p.done < COLD for p in during)  # seen while it ran, not only at its end
    running = sorted({p.updated_at for p in during if p.done < COLD})  # the end comes at once
    assert all(b - a >= 0.9 for a, b in zip(running, running[1:], strict=False))  # <= 1/s
    done = bed.info(sid)["warmup"]  # over: done == total stays as the record
    assert (done["step"], done["done"], done["total"]) == (WARM_START_STEP, COLD, COLD)
