"""Per-frame optimisation of D2IP (paper III.A-C): Adam on theta of eq. (4) for a fixed or
adaptive count, the result at theta^(N_i) (eq. 5).

The function holds no state: the caller owns the network (its weights carry over between frames:
TPP, eq. 9), the Adam optimiser (its moments carry over too), the fixed input Z (inside the
`Objective`) and the window of previous volumes, and saves and restores them as it likes.
UPWS (eq. 6) is the same call on an arbitrary frame with `UPWS_ITERATIONS`, from a fresh network.
Stopping rules are objects: `FixedIterations` / `AdaptiveStop` for one frame, and the schedules
`FixedSchedule` / `AdaptiveSchedule` that give each frame its rule from its iteration count.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor, nn

from worker.recon.d2ip.objective import LossTerms, Objective
from worker.recon.d2ip.prior import VolumeWindow

Moments = dict[str, dict[str, Tensor]]


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


@dataclass(frozen=True)
class FixedSchedule:
    """Every frame runs its full count (the paper's schedule, IV.D)."""

    name: ClassVar[str] = "paper"

    def stop(self, n: int) -> StopRule:
        return FixedIterations(n)

    def settings(self) -> dict[str, Any]:
        return {"schedule": self.name}


@dataclass(frozen=True)
class AdaptiveSchedule:
    """`AdaptiveStop` within [min(min_iterations, n), n] for a frame of count n, stopping below
    a relative loss decrease `tol` (beyond the paper)."""

    name: ClassVar[str] = "adaptive"
    min_iterations: int = 50
    tol: float = AdaptiveStop.tol

    def __post_init__(self) -> None:
        if self.min_iterations < 1:
            raise ValueError(f"min_iterations: must be positive, got {self.min_iterations}")
        if not self.tol > 0:
            raise ValueError(f"adaptive_tol: must be positive, got {self.tol}")

    def stop(self, n: int) -> StopRule:
        return AdaptiveStop(min_iter=min(self.min_iterations, n), max_iter=n, tol=self.tol)

    def settings(self) -> dict[str, Any]:
        return {"schedule": self.name, "min_iterations": self.min_iterations,
                "adaptive_tol": self.tol}


Schedule = FixedSchedule | AdaptiveSchedule

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
    loss: float  # eq. (14) at theta^(N)
    data_loss: float  # mean squared residual at theta^(N)
    data_history: list[float] = field(default_factory=list)  # at theta^(0 .. N-1)
    loss_history: list[float] = field(default_factory=list)


class Optimizer(Protocol):
    """Adam over a network's parameters, its moments by parameter name (the session state and
    the warm-start store keep them so)."""

    def zero_grad(self, set_to_none: bool = True) -> None: ...

    def step(self) -> None: ...

    def moments(self) -> Moments: ...

    def load_moments(self, moments: Moments) -> None: ...


class IterationHook(Protocol):
    """Wraps every Adam iteration (e.g. `cpu.thread_tuner.ThreadTuner` times them)."""

    def iteration(self) -> AbstractContextManager[None]: ...


class Adam:
    """torch.optim.Adam over all of `net`'s parameters, moments by parameter name."""

    def __init__(self, net: nn.Module, lr: float) -> None:
        self.params = dict(net.named_parameters())
        self.adam = torch.optim.Adam(self.params.values(), lr=lr)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.adam.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        self.adam.step()

    def moments(self) -> Moments:
        """`step`, `exp_avg`, `exp_avg_sq` by parameter name ({} before the first step)."""
        return {name: {k: self.adam.state[p][k] for k in ("step", "exp_avg", "exp_avg_sq")}
                for name, p in self.params.items() if self.adam.state.get(p)}

    def load_moments(self, moments: Moments) -> None:
        """Set Adam's state from `moments` (every parameter, one step count)."""
        check_moments(moments, set(self.params))
        for name, p in self.params.items():
            m = moments[name]
            self.adam.state[p] = {
                "step": torch.tensor(float(m["step"]), dtype=torch.float32),
                **{k: torch.as_tensor(m[k]).reshape(p.shape).to(p.device, p.dtype).clone()
                   for k in ("exp_avg", "exp_avg_sq")}}


def check_moments(moments: Moments, names: set[str]) -> float:
    """The one step count of `moments`; ValueError unless they cover exactly `names` and
    share one step count."""
    if set(moments) != names:
        raise ValueError("moments must cover exactly the network's parameters")
    steps = {float(m["step"]) for m in moments.values()}
    if len(steps) != 1:
        raise ValueError(f"parameters have different Adam step counts: {sorted(steps)}")
    return steps.pop()


def adam_iteration(objective: Objective, optimizer: Optimizer, dv: Tensor,
                   window: VolumeWindow | None = None, lam: float | None = None) -> LossTerms:
    """One Adam iteration on eq. (14) (forward, backward, step); the terms are before the step.

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
                   lam: float | None = None, hook: IterationHook | None = None) -> FrameResult:
    """Minimise eq. (14) for measurements `dv` (M,), starting from the current weights.

    `window` holds previously reconstructed frames for the temporal TV (None: no history); this
    function does not push the result into it. `on_iteration(k, loss)` is called after step k.
    `lam` is the frame's lambda_TV (None: the objective's `LossConfig.lam`). `hook.iteration()`
    wraps every iteration (the execution strategy's, e.g. the CPU kernels' thread tuner).
    """
    data_hist: list[float] = []
    loss_hist: list[float] = []
    n_fixed = stop.n if isinstance(stop, FixedIterations) else None
    while n_fixed is None or len(loss_hist) < n_fixed:
        with hook.iteration() if hook is not None else contextlib.nullcontext():
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
