"""Spatial total-variation reconstruction (the TV baseline of D2IP IV.C).

    x = argmin F(x) + G(D x),   F(x) = ‖W^½(Δv - J x)‖²,   G(g) = (λ/V) Σ_v sqrt(|g_v|² + ε)

i.e. the data term plus λ·TV_ε, the spatial term of D2IP eq. (12)/(11)
(`worker.recon.finite_difference`), with the whitened operator A = W^½J of
`worker.forward.operator`.

Solver: Chambolle-Pock primal-dual (Chambolle & Pock 2011, algorithm 1, θ = 1) on K = D:
    p ← prox_{σG*}(p + σ D x̄),   x⁺ ← prox_{τF}(x - τ Dᵀp),   x̄ ← 2x⁺ - x,   τσ‖D‖² ≤ 1.
prox_{τF} is exact and cheap through the operator's singular system A Aᵀ = U S² Uᵀ:
prox_{τF}(y) = y + Aᵀ U diag(c/(1 + c s²)) Uᵀ (W^½Δv - A y), c = 2τ: two V x M products per
iteration. prox_{σG*} follows from Moreau's identity; the proximal map of the ε-smoothed norm
is radial, its radius the root of r + a r/sqrt(r² + ε) = |z| (a = λ/(Vσ)), found by Newton's
method from the unsmoothed soft threshold max(|z| - a, 0), which converges monotonically.
Step sizes τ = ρ/√12, σ = 1/(ρ√12), ρ² = RHO · ‖x_T‖ / ((λ/V) √V) balances the primal scale
(the Tikhonov solution x_T) against the dual one (|p_v| ≤ λ/V).

Stopping rule: ‖x⁺ - x‖ ≤ tol ‖x⁺‖ (default 1e-3), or max_iter iterations (default 300).
λ and ε: per frame, by the data-scaled rule of `worker.recon.lambda_rule`, or `lam=`.
Warm start: x and p continue from the previous frame (the first frame starts at x_T, p = 0).
State: x, p and the frame counter. A frame without data (Δv = 0) gives x = 0 and resets x, p.

`relinearise=N` (default 0): after the linear fit, up to N Gauss-Newton steps on the nonlinear
data term (`worker.recon.gauss_newton`): the same iterations on the data term linearised at the
current x, read as u = log(σ/σ0) (`worker.forward.linearisation`), with that operator's singular
system; λ and ε stay those of the linear fit. The image is then Δσ/σ0 = e^u - 1.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from worker.forward.linearisation import Relinearised
from worker.recon.base import FrameResult, StreamingReconstructor, register
from worker.recon.finite_difference import NORM_SQ_BOUND, MaskedDifference, total_variation
from worker.recon.gauss_newton import conductivity_change, gauss_newton
from worker.recon.lambda_rule import KAPPA, DataScaledLambda
from worker.recon.tikhonov import tikhonov_operator

if TYPE_CHECKING:
    from worker.forward.model import ForwardModel

RHO = 1.0
NEWTON_STEPS = 8


def prox_dual(q: Tensor, sigma: float, weight: float, eps: float) -> Tensor:
    """prox_{σG*}(q) for G(g) = weight Σ_v sqrt(|g_v|² + ε), q of shape (3, V)."""
    z = q / sigma
    size = z.square().sum(0).sqrt()
    a = weight / sigma
    r = (size - a).clamp(min=0.0)
    for _ in range(NEWTON_STEPS):
        root = (r.square() + eps).sqrt()
        r = r - (r + a * r / root - size) / (1.0 + a * eps / root**3)
    shrink = torch.where(size > 0, r / size.clamp(min=torch.finfo(size.dtype).tiny), 0.0)
    return q * (1.0 - shrink)


@register("tv")
class TotalVariation(StreamingReconstructor):
    """Chambolle-Pock TV per frame, warm-started from the previous frame."""

    method = "tv"

    def __init__(self, model: ForwardModel, lam: float | None = None, tol: float = 1e-3,
                 max_iter: int = 300, relinearise: int = 0, device: str = "cpu") -> None:
        super().__init__(model)
        if relinearise < 0:
            raise ValueError(f"relinearise: must be 0 or more, got {relinearise}")
        self.relinearise = int(relinearise)
        self.device = torch.device(device)
        operator = model.operator
        self.w = torch.tensor(operator.weights, **self._f32)
        self.a = torch.tensor(operator.whitened, **self._f32)
        self.u = torch.tensor(operator.spectrum.basis, **self._f32)
        self.s2 = torch.tensor(operator.spectrum.singular_values**2, **self._f32)
        self.tikhonov = torch.tensor(tikhonov_operator(model).matrix, device=self.device)
        self.difference = MaskedDifference(model.mask, self.device)
        self.rule = DataScaledLambda(self.difference)
        self.lam, self.tol, self.max_iter = lam, tol, max_iter
        self.x: Tensor | None = None
        self.p: Tensor | None = None
        self.frames = 0

    @property
    def settings(self) -> dict[str, Any]:
        return {"lam": self.lam if self.lam is not None else f"kappa={KAPPA}",
                "tol": self.tol, "max_iter": self.max_iter, "relinearise": self.relinearise}

    def push(self, dv: np.ndarray) -> FrameResult:
        self.frames += 1
        return self.timed(lambda: self._solve(dv))

    def _solve(self, dv: np.ndarray) -> tuple[np.ndarray, int, float]:
        dvt = torch.as_tensor(np.asarray(dv, dtype=np.float32), device=self.device)
        b = self.w * dvt
        energy = float(b.square().sum())
        if energy == 0.0:
            self.x = self.p = None
            return np.zeros(self.difference.n_voxels, dtype=np.float32), 0, 0.0
        x_tik = self.tikhonov @ dvt
        n_voxels = self.difference.n_voxels
        frame = self.rule(x_tik, energy)
        lam, eps = (frame.lam if self.lam is None else float(self.lam)), frame.eps
        weight = lam / n_voxels
        x = x_tik if self.x is None else self.x
        p = torch.zeros((3, n_voxels), **self._f32) if self.p is None else self.p
        rho = math.sqrt(RHO * float(x_tik.norm()) / (weight * math.sqrt(n_voxels)))
        x, p, iterations = self._chambolle_pock(self.a, self.u, self.s2, b, x, p, rho, weight,
                                                eps)
        state = {"x": x, "p": p, "a": self.a, "data": b}

        def fit(lin: Relinearised) -> int:
            a = torch.tensor(lin.operator.whitened, **self._f32)
            basis = torch.tensor(lin.operator.spectrum.basis, **self._f32)
            s2 = torch.tensor(lin.operator.spectrum.singular_values**2, **self._f32)
            data = self.w * torch.as_tensor(lin.data, **self._f32)
            state["x"], state["p"], done = self._chambolle_pock(
                a, basis, s2, data, state["x"], state["p"], rho, weight, eps)
            state["a"], state["data"] = a, data
            return done

        iterations += gauss_newton(self.model, dv, self.relinearise,
                                   lambda: state["x"].double().cpu().numpy(), fit,
                                   lambda: dict(state), state.update)
        x, p, a, data = state["x"], state["p"], state["a"], state["data"]
        self.x, self.p = x, p
        prior = lam * total_variation(x, self.difference, eps)
        loss = float((data - a @ x).square().sum() + prior)
        if self.relinearise:
            x = conductivity_change(x)
        return x.cpu().numpy(), iterations, loss

    def _chambolle_pock(self, a: Tensor, basis: Tensor, s2: Tensor, b: Tensor, x: Tensor,
                        p: Tensor, rho: float, weight: float, eps: float
                        ) -> tuple[Tensor, Tensor, int]:
        """Iterate from (x, p) on ‖b - A x‖² + (λ/V) TV_ε(x), A Aᵀ = U diag(s2) Uᵀ, until the
        stopping rule; (x, p, iterations)."""
        tau, sigma = rho / math.sqrt(NORM_SQ_BOUND), 1.0 / (rho * math.sqrt(NORM_SQ_BOUND))
        c = 2.0 * tau
        gain = c / (1.0 + c * s2)
        x_bar, it = x, 0
        while it < self.max_iter:
            it += 1
            p = prox_dual(p + sigma * self.difference.apply(x_bar), sigma, weight, eps)
            y = x - tau * self.difference.adjoint(p)
            x_new = y + a.T @ (basis @ (gain * (basis.T @ (b - a @ y))))
            change = float((x_new - x).norm()) / max(float(x_new.norm()), 1e-30)
            x_bar, x = 2.0 * x_new - x, x_new
            if change <= self.tol:
                break
        return x, p, it

    @property
    def _f32(self) -> dict[str, Any]:
        return {"dtype": torch.float32, "device": self.device}

    def state_dict(self) -> dict[str, Any]:
        def cpu(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.detach().cpu().clone()

        return {"frames": self.frames, "x": cpu(self.x), "p": cpu(self.p)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        def dev(t: Any) -> Tensor | None:
            return None if t is None else torch.as_tensor(t).to(**self._f32)

        self.frames = int(state["frames"])
        self.x, self.p = dev(state["x"]), dev(state["p"])
