"""A reconstruction that is one precomputed matrix: x = R Δv, one product per batch of frames.

Tikhonov (`worker.recon.tikhonov`) and GREIT (`worker.recon.greit`) differ only in how R is
built. Both report as the frame's loss ‖P Δv‖² + ‖p ∘ x‖², with P = W^½(I - J R) the whitened
residual operator (M x M) and p an optional per-voxel penalty (Tikhonov's μd; none for GREIT),
so a frame costs one V x M and one M x M product. State: the frame counter only.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from worker.recon.base import FrameResult, StreamingReconstructor

if TYPE_CHECKING:
    from worker.forward.model import ForwardModel


class LinearReconstructor(StreamingReconstructor):
    """x = R Δv per frame on `device`; push_many does the whole batch in one product."""

    def __init__(self, model: ForwardModel, matrix: np.ndarray, residual: np.ndarray,
                 penalty: np.ndarray | None = None, device: str = "cpu") -> None:
        super().__init__(model)
        self.device = torch.device(device)
        self.matrix = torch.from_numpy(np.asarray(matrix, dtype=np.float32)).to(self.device)
        self.residual = torch.from_numpy(np.asarray(residual, dtype=np.float32)).to(self.device)
        self.penalty = (None if penalty is None else
                        torch.from_numpy(np.asarray(penalty, dtype=np.float32)).to(self.device))
        self.frames = 0

    def solve(self, dvs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(T, M) float32 on the device -> solutions (T, V) and objective values (T,)."""
        x = dvs @ self.matrix.T
        loss = (dvs @ self.residual.T).square().sum(1)
        if self.penalty is not None:
            loss = loss + (x * self.penalty).square().sum(1)
        return x, loss

    def push(self, dv: np.ndarray) -> FrameResult:
        return self.push_many(np.asarray(dv)[None])[0]

    def push_many(self, dvs: np.ndarray) -> list[FrameResult]:
        """All frames in one matrix product (T x M times M x V)."""
        t0 = time.perf_counter()
        with torch.no_grad():
            x, loss = self.solve(torch.as_tensor(np.asarray(dvs, dtype=np.float32),
                                                 device=self.device))
            x, loss = x.cpu().numpy(), loss.cpu().numpy()
        volumes = self.model.to_volume(x)
        self.frames += len(volumes)
        ms = 1e3 * (time.perf_counter() - t0) / len(volumes)
        return [FrameResult(volume=v, iterations=1, loss=float(f), milliseconds=ms)
                for v, f in zip(volumes, loss, strict=True)]

    def state_dict(self) -> dict[str, Any]:
        return {"frames": self.frames}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.frames = int(state["frames"])
