"""A reconstruction that is one precomputed matrix: x = R Δv, one product per batch of frames.

Tikhonov (`worker.recon.tikhonov`) and GREIT (`worker.recon.greit`) differ only in how R is
built. Both report as the frame's loss ‖P Δv‖² + ‖p ∘ x‖², with P = W^½(I - J R) the whitened
residual operator (M x M) and p an optional per-voxel penalty (Tikhonov's μd; none for GREIT).
State: the frame counter only.

R is either dense (V x M) or `Factored`, R = L Q with L (V x r) and Q (r x M): J has rank at
most r ≤ M/2 when the protocol keeps reciprocal pairs, so Tikhonov's R factors exactly and a
single frame reads (V + M) r floats instead of V M (`rank_columns` says which of a candidate
L's columns count). Dense, a frame costs one V x M and one M x M product; factored, one r x M,
one V x r and the M x M one. A `Factored` R from a singular system (Q's rows orthonormal
once whitened, as Tikhonov's) may carry its objective in diagonal form, ‖w ∘ Δv‖² − Σ gᵢ cᵢ²
over the coefficients c = Q Δv: then the M x M product and the V-long penalty pass go, and a
frame reads only L and Q.

One frame at a time on the CPU (the live preview), the products with R's factors go through the
fused kernels' threaded matrix-vector product (`worker.recon.d2ip.cpu.fused_loss
.transposed_matvec`): a 1 x r by r x V product is memory-bound, and torch's single-row matmul
uses one core for it, while the kernel splits V over the CPUs the kernels' thread policy allows
(docs/reconstruction.md, "The preview, one frame at a time"). Batches keep torch's matmul;
without the kernels (no compiler, `EITMON_FUSED=0`) single frames do too. With `half` (the
default) a single frame reads a factored R's L from a float16 copy, each row scaled to its
largest magnitude: half the bytes (10 MB instead of 20 at the default grid, which then stays in
the cache), at a cost of at most 2.2e-4 of the image's norm measured on `tidal-breathing`
(tested below 1e-3 with the truncation); without it, the same values as a batch to float32
rounding (tested).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from worker.recon.base import FrameResult, StreamingReconstructor

if TYPE_CHECKING:
    from worker.forward.model import ForwardModel


RANK_RTOL = 1e-6  # columns of L below this fraction of the largest: below float32 rounding


@dataclass(frozen=True)
class Factored:
    """R = left @ right: left (V, r), right (r, M).

    With `weights` (M,) and `gain` (r,), the frame's objective in diagonal form: ‖w ∘ Δv‖² −
    Σᵢ gainᵢ cᵢ², c = right @ Δv (Tikhonov's, `worker.recon.tikhonov`, eq. there)."""

    left: np.ndarray
    right: np.ndarray
    weights: np.ndarray | None = None
    gain: np.ndarray | None = None

    @property
    def rank(self) -> int:
        return int(self.left.shape[1])

    def truncated(self, k: int) -> Factored:
        """The first k components (columns of L, rows of Q, gains)."""
        if not 0 < k <= self.rank:
            raise ValueError(f"rank: expected 1 to {self.rank}, got {k}")
        return Factored(left=self.left[:, :k], right=self.right[:k], weights=self.weights,
                        gain=None if self.gain is None else self.gain[:k])


def rank_columns(left: np.ndarray, rtol: float = RANK_RTOL) -> np.ndarray:
    """(r,) bool: the columns of a candidate L whose norm exceeds `rtol` x the largest one.

    With L's columns l_i and Q's rows orthonormal (as Tikhonov's Uᵀ W^½ up to the weights), the
    dropped part of R = Σ l_i q_iᵀ is below `rtol` of its largest term: float32 rounding."""
    norms = np.linalg.norm(left, axis=0)
    return norms > rtol * norms.max()


def _tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(device)


def _fused_matvec_t() -> Callable[..., torch.Tensor] | None:
    """The fused kernels' `transposed_matvec` when they are built (built now if need be), else
    None. Imported here, not at the top: `worker.recon.d2ip` imports this module's users."""
    from worker.recon.d2ip.cpu import library
    from worker.recon.d2ip.cpu.fused_loss import transposed_matvec

    return transposed_matvec if library.available() else None


class LinearReconstructor(StreamingReconstructor):
    """x = R Δv per frame on `device` (R dense or `Factored`); push_many does the whole batch
    in one product (two when factored)."""

    def __init__(self, model: ForwardModel, matrix: np.ndarray | Factored,
                 residual: np.ndarray | None, penalty: np.ndarray | None = None,
                 device: str = "cpu", half: bool = True) -> None:
        """`residual` P and `penalty` p give the loss ‖P Δv‖² + ‖p ∘ x‖²; None when `matrix`
        is `Factored` with its objective in diagonal form (`weights`, `gain`). `half`: a single
        frame reads L from a float16 copy (module docstring)."""
        super().__init__(model)
        self.device = torch.device(device)
        # stored transposed, so that both products read rows: (T, M) @ (M, .) @ (., V)
        self.factors = ((_tensor(matrix.right.T, self.device),
                         _tensor(matrix.left.T, self.device))
                        if isinstance(matrix, Factored) else (_tensor(matrix.T, self.device),))
        diagonal = isinstance(matrix, Factored) and matrix.gain is not None
        if residual is None and not diagonal:
            raise ValueError("residual: needed unless R is Factored with weights and gain")
        self.diagonal = ((torch.from_numpy(np.asarray(matrix.weights, np.float64)).to(self.device),
                          torch.from_numpy(np.asarray(matrix.gain, np.float64)).to(self.device))
                         if diagonal and residual is None else None)
        self.residual = None if residual is None else _tensor(residual, self.device)
        self.penalty = None if penalty is None else _tensor(penalty, self.device)
        self.frames = 0
        self.matvec_t = _fused_matvec_t() if self.device.type == "cpu" else None
        # L's float16 copy: rows scaled to their largest magnitude, and the row scales
        self.half: tuple[torch.Tensor, torch.Tensor] | None = None
        if half and self.matvec_t is not None and isinstance(matrix, Factored):
            left = self.factors[1]
            scale = left.abs().amax(dim=1)
            scale = torch.where(scale > 0, scale, torch.ones_like(scale))
            self.half = ((left / scale[:, None]).half().contiguous(), scale)

    @property
    def rank(self) -> int | None:
        """r when R is factored, else None."""
        return int(self.factors[0].shape[1]) if len(self.factors) == 2 else None

    def product(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """x @ factors[i] for x (T, n); one frame through the fused kernels when they apply,
        from the float16 copy where there is one (module docstring)."""
        factor = self.factors[i]
        if self.matvec_t is None or x.shape[0] != 1:
            return x @ factor
        out = x.new_empty((1, factor.shape[1]))
        if i == 1 and self.half is not None:  # L, the large factor
            rows, scale = self.half
            self.matvec_t(rows, x[0] * scale, out[0])
        else:
            self.matvec_t(factor, x[0], out[0])
        return out

    def images(self, dvs: torch.Tensor) -> torch.Tensor:
        """(T, M) float32 on the device -> the solutions R Δv (T, V), without the loss."""
        x = dvs
        for i in range(len(self.factors)):
            x = self.product(x, i)
        return x

    def solve(self, dvs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(T, M) float32 on the device -> solutions (T, V) and objective values (T,)."""
        if self.diagonal is not None:  # the loss from the coefficients, in float64 (a
            c = self.product(dvs, 0)  # difference of two sums of squares)
            weights, gain = self.diagonal
            loss = ((dvs.double() * weights).square().sum(1)
                    - (c.double().square() * gain).sum(1)).clamp(min=0.0)
            return self.product(c, 1), loss
        x = self.images(dvs)
        assert self.residual is not None
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
