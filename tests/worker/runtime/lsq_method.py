"""Small real reconstructors for the runtime tests: the least-squares pseudo-inverse of the
Jacobian, with a frame counter as its state (so a restored checkpoint can be checked exactly),
and two faulty variants of it.

Workers get them through their constructor (`Worker(cfg, redis, methods={...})`; the worker
subprocesses of conftest.LAUNCHER through `worker.runtime.main.run(methods)`), under the
names the API accepts, so the tests depend neither on the speed or state layout of the real
methods nor on the global method registry.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import numpy as np

from worker.forward.model import ForwardModel
from worker.recon.base import FrameResult, StreamingReconstructor


class PseudoInverse(StreamingReconstructor):
    method = "lsq-test"

    def __init__(self, model: ForwardModel) -> None:
        super().__init__(model)
        self.matrix = np.linalg.pinv(model.jacobian, rcond=1e-2).astype(np.float32)
        self.frames = 0

    def push(self, dv: np.ndarray) -> FrameResult:
        time.sleep(float(os.environ.get("LSQ_DELAY_S", "0")))  # a slower method, on request
        self.frames += 1
        return self.timed(lambda: (self.matrix @ dv.astype(np.float32), 1, 0.0))

    def state_dict(self) -> dict[str, Any]:
        return {"frames": np.int64(self.frames)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.frames = int(state["frames"])


class FailsOnFrame(PseudoInverse):
    """Raises on its `k`-th frame (counting from 0), every time it gets there again."""

    def __init__(self, model: ForwardModel, k: int) -> None:
        super().__init__(model)
        self.k = k

    def push(self, dv: np.ndarray) -> FrameResult:
        if self.frames == self.k:
            raise RuntimeError(f"poison frame {self.k}")
        return super().push(dv)


class Blocks(PseudoInverse):
    """Hangs in `push` until `release` is set (a stuck main method); sets `entered` first."""

    def __init__(self, model: ForwardModel, entered: threading.Event,
                 release: threading.Event) -> None:
        super().__init__(model)
        self.entered, self.release = entered, release

    def push(self, dv: np.ndarray) -> FrameResult:
        self.entered.set()
        self.release.wait()
        return super().push(dv)


class Adapts(PseudoInverse):
    """Has background work between frames (as `d2ip-live`'s fine-tuning): up to `BUDGET`
    steps after each frame, counted; every instance is kept in `INSTANCES` for the test."""

    BUDGET = 5
    INSTANCES: list[Adapts] = []

    def __init__(self, model: ForwardModel) -> None:
        super().__init__(model)
        self.steps, self.since_frame = 0, self.BUDGET  # no work before the first frame
        self.steps_before_frame: list[int] = []
        Adapts.INSTANCES.append(self)

    def push(self, dv: np.ndarray) -> FrameResult:
        self.steps_before_frame.append(self.steps)
        self.since_frame = 0
        return super().push(dv)

    def background_step(self) -> bool:
        if self.since_frame >= self.BUDGET:
            return False
        self.steps += 1
        self.since_frame += 1
        return True
