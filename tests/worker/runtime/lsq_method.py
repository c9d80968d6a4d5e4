"""A small real reconstructor for the runtime tests: the least-squares pseudo-inverse of the
Jacobian, with a frame counter as its state (so a restored checkpoint can be checked exactly).

Worker subprocesses started by the tests (conftest.LAUNCHER) register it under the name
"tikhonov" in that process only, so the tests do not depend on the speed or state layout of
the real methods. The pytest process's registry is left alone.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from worker.forward.model import ForwardModel
from worker.recon.base import FrameResult, StreamingReconstructor, available_methods, register


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


def install(name: str) -> None:
    """Register (or replace) `name` with the pseudo-inverse."""
    available_methods()  # load the built-in methods first, so ours wins
    register(name)(PseudoInverse)

