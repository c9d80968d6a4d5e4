"""Gauss-Newton steps on the nonlinear data term, for any method with a linear fit.

A method fits its linear model first; each step then linearises the data term at the current
image, read as u = log(σ/σ0) (`worker.forward.linearisation.relinearise`), and the method fits
that linear model from where it stands. A step is kept only if it lowered the nonlinear data
term (1/M)‖W^½(Δv - F(u))‖²: otherwise the method goes back to the image before the step and
stops (Gauss-Newton without a line search can overshoot where the data hardly see a voxel; the
tank's first runs had u running to -39 in one step). The check after the last step costs one
more solve, without a Jacobian.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import torch

from worker.forward.linearisation import U_BOUNDS, Relinearised, misfit, relinearise

if TYPE_CHECKING:
    from worker.forward.model import ForwardModel

State = TypeVar("State")


def gauss_newton(model: ForwardModel, dv: np.ndarray, steps: int,
                 image: Callable[[], np.ndarray], fit: Callable[[Relinearised], int],
                 snapshot: Callable[[], State], restore: Callable[[State], None]) -> int:
    """Up to `steps` steps after the method's linear fit; the iterations they took.

    `image()` is the method's current u (V,); `fit(relinearised)` fits the linearised data term
    from the current state and returns its iterations; `snapshot()`/`restore(state)` save and
    bring back the method's state (the image before a step that is not kept)."""
    iterations, best, kept = 0, float("inf"), snapshot()
    for _ in range(steps):
        relinearised = relinearise(model, dv, image())
        if relinearised.misfit >= best:
            restore(kept)
            return iterations
        best, kept = relinearised.misfit, snapshot()
        iterations += fit(relinearised)
    if steps and misfit(model, dv, image()) >= best:
        restore(kept)
    return iterations


def conductivity_change(u: torch.Tensor) -> torch.Tensor:
    """The image of a relinearised method: Δσ/σ0 = e^u - 1 of u = log(σ/σ0) within U_BOUNDS."""
    return torch.expm1(u.clamp(*U_BOUNDS))
