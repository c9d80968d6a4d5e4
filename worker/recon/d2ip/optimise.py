"""Per-frame optimisation of D2IP (paper III.A-C): Adam on theta for a fixed or adaptive count.

The function holds no state: the caller owns the network (its weights carry over between frames:
TPP, eq. 7), the Adam optimiser (its moments carry over too), the fixed input Z (inside the
`Objective`) and the window of previous volumes, and saves and restores them as it likes.
UPWS (eq. 6) is the same call on an arbitrary frame with `UPWS_ITERATIONS`, from a fresh network.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from worker.recon.d2ip.flat_adam import FlatAdam
from worker.recon.d2ip.loss import VolumeWindow
from worker.recon.d2ip.objective import LossTerms, Objective
from worker.recon.d2ip.thread_tuner import ThreadTuner


@dataclass(frozen=True)
class FixedIterations:
    """Run exactly `n` Adam iterations (the paper's schedule, III.A and IV.D)."""

    n: int


@dataclass(frozen=True)
class AdaptiveStop:
    """Stop once the loss stops falling, within [min_iter, max_iter] iterations.

    After each iteration k >= max(min_iter, 2 * window), compare the mean total loss over the last
    `window` iterations with the mean over the `window` before them; stop when the relative
    decrease is below `tol` (a rise counts as no decrease).
    """

    min_iter: int = 50
    max_iter: int = 250
    window: int = 20
    tol: float = 1e-3

    def should_stop(self, losses: list[float]) -> bool:
        k, w = len(losses), self.window
        if k >= self.max_iter:
            return True
        if k < max(self.min_iter, 2 * w):
            return False
        before = sum(losses[k - 2 * w:k - w]) / w
        recent = sum(losses[k - w:]) / w
        return (before - recent) < self.tol * abs(before)


StopRule = FixedIterations | AdaptiveStop

UPWS_ITERATIONS = FixedIterations(1800)  # warm start on an arbitrary frame (eq. 6)
FIRST_FRAME_ITERATIONS = FixedIterations(450)
LATER_FRAME_ITERATIONS = FixedIterations(250)
LR_SIMULATED = 5e-4
LR_REAL = 1e-4


@dataclass
class FrameResult:
    """Reconstruction of one frame at the final parameters theta^(N) (eq. 5)."""

    values: Tensor  # (V,) Delta sigma inside the mask, C order, detached
    iterations: int  # N, Adam steps taken
    loss: float  # eq. (11) at theta^(N)
    data_loss: float  # mean squared residual at theta^(N)
    data_history: list[float] = field(default_factory=list)  # at theta^(0 .. N-1)
    loss_history: list[float] = field(default_factory=list)


KERNEL_THREADS = ThreadTuner()  # the fused kernels' threads are per process, so is their tuner
Optimizer = FlatAdam | torch.optim.Optimizer  # what the loops take: zero_grad() and step()


def make_optimizer(net: nn.Module, lr: float = LR_SIMULATED) -> FlatAdam:
    """Adam over all network parameters (its moments are part of the per-session state).

    `FlatAdam`: torch's fused Adam on one flat tensor holding every parameter (the fused kernel
    is ~5x faster than the default for-each implementation here, the flat tensor saves ~1 ms
    more per iteration).
    """
    return FlatAdam(net, lr)


def adam_iteration(objective: Objective, optimizer: Optimizer, dv: Tensor,
                   window: VolumeWindow | None = None, lam: float | None = None) -> LossTerms:
    """One Adam iteration on eq. (11) (forward, backward, step); the terms are before the step.

    `lam` overrides the objective's lambda_TV for this frame (None: `LossConfig.lam`)."""
    optimizer.zero_grad(set_to_none=True)
    terms = objective(dv, window, lam)
    terms.total.backward()
    optimizer.step()
    return terms


def optimise_frame(objective: Objective, optimizer: Optimizer, dv: Tensor,
                   window: VolumeWindow | None = None,
                   stop: StopRule = LATER_FRAME_ITERATIONS,
                   on_iteration: Callable[[int, float], None] | None = None,
                   lam: float | None = None) -> FrameResult:
    """Minimise eq. (11) for measurements `dv` (M,), starting from the current weights.

    `window` holds previously reconstructed frames for the temporal TV (None: no history); this
    function does not push the result into it. With the fused CPU kernels, `KERNEL_THREADS`
    times the iterations now and then and picks the kernels' thread count.
    `on_iteration(k, loss)` is called after step k.
    `lam` is the frame's lambda_TV (None: the objective's `LossConfig.lam`).
    """
    data_hist: list[float] = []
    loss_hist: list[float] = []
    n_fixed = stop.n if isinstance(stop, FixedIterations) else None
    tuner = KERNEL_THREADS if objective.fused else None
    while n_fixed is None or len(loss_hist) < n_fixed:
        with tuner.iteration() if tuner is not None else contextlib.nullcontext():
            terms = adam_iteration(objective, optimizer, dv, window, lam)
        loss_hist.append(float(terms.total.detach()))
        data_hist.append(float(terms.data.detach()))
        if on_iteration is not None:
            on_iteration(len(loss_hist), loss_hist[-1])
        if isinstance(stop, AdaptiveStop) and stop.should_stop(loss_hist):
            break
    with torch.no_grad():
        final = objective(dv, window, lam)  # at theta^(N), after the last step
    return FrameResult(values=final.values.detach(), iterations=len(loss_hist),
                       loss=float(final.total.detach()), data_loss=float(final.data.detach()),
                       data_history=data_hist, loss_history=loss_hist)
