"""INR reconstruction of one frame after another (Diff-INR eq. 15-17, Algorithm 1).

Loss (eq. 17): L(θ) = L_data(θ) + λ R(f_θ), with the data term of eq. (16) on the voxel grid,
    L_data = (1/M) ‖W^½ Δv - A x_θ‖²,   A = W^½ J,   x_θ = f_θ(γ(p̂_v)) at the V voxel centres,
the project's whitened linearised operator (`worker.forward.operator`), shared by every
method. Why voxels and not the seed's FE nodes: see docs/diff-inr.md (one operator and one
grid for every method and for scoring, V ≈ 6-11 thousand points against 25-60 thousand nodes
per MLP evaluation, and the Jacobian is already projected onto the voxels).

x_θ = s f_θ with the frame's unit s (`worker.recon.diffinr.inr`, from the frame's Tikhonov
image), and Adam minimises L / E, E = (1/M)‖W^½Δv‖² the data energy (λ ∝ E, see
`worker.recon.diffinr.regularisers`): L / E starts at 1 on every frame, its gradient does not
shrink with c² on a small change (where it would reach Adam's ε of 1e-8), and the fit of c Δv
is c times the fit of Δv, step for step. The loss reported per frame is L / E.

Per frame: Adam (`lr`: the seed's 0.01 by default, 0.002 for `inr-tv`) for at most `max_iter`
iterations; every `window` iterations the mean loss of the window is compared with the previous
window's and the fit stops when it fell by less than `tol` of it (the SDS term is stochastic, so
single iterations are too noisy to compare). Across frames (`carry`, beyond the seed, like
D2IP's TPP): the next frame starts from the previous frame's weights and image (rescaled to the
new unit s; a fresh Adam); without `carry` every frame starts from the same seeded initial
network. `features` and `width` (the seed's 128 and 128) exist for tests on small machines.

The data term, linear or not (`relinearise`, beyond the linear model every method shares):
with `relinearise=0` the fit is the linear one above and x_θ is Δσ/σ0 to first order. With
`relinearise=K`, after that fit the data term is linearised again at the current output, read
as the log-conductivity ratio u = log(σ/σ0) (`worker.forward.linearisation`: the model solved
and its Jacobian formed at σ0 e^u), and the fit continues from the same network with a fresh
Adam, K times: Gauss-Newton on the nonlinear data term, the seed's absolute model in
difference form. The image is then Δσ/σ0 = e^u - 1 ≥ -1. The regulariser keeps the weights
of the linear fit and acts on u.
State: the frame counter, the MLP (with its fixed B and its unit s) and the
regulariser's random generator.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from worker.forward.linearisation import Relinearised
from worker.recon.base import FrameResult, StreamingReconstructor
from worker.recon.diffinr.bandwidth import ALPHA, bandwidth
from worker.recon.diffinr.inr import (
    FEATURES,
    INR,
    LEARNING_RATE,
    WIDTH,
    DomainFrame,
    frame_range,
    voxel_centres,
)
from worker.recon.diffinr.regularisers import Regulariser
from worker.recon.gauss_newton import conductivity_change, gauss_newton
from worker.recon.tikhonov import tikhonov_operator

if TYPE_CHECKING:
    from worker.forward.model import ForwardModel

MAX_ITER = 400
WINDOW = 25
TOL = 0.01


class INRReconstructor(StreamingReconstructor):
    """f_θ fitted per frame under eq. (17), warm-started from the previous frame."""

    def __init__(self, model: ForwardModel, regulariser: Regulariser, method: str,
                 alpha: float = ALPHA, max_iter: int = MAX_ITER, window: int = WINDOW,
                 tol: float = TOL, lr: float = LEARNING_RATE, carry: bool = True, seed: int = 0,
                 relinearise: int = 0, features: int = FEATURES, width: int = WIDTH,
                 device: str = "cpu") -> None:
        super().__init__(model)
        if window < 1 or max_iter < window:
            raise ValueError("window: must be at least 1 and at most max_iter")
        if relinearise < 0:
            raise ValueError(f"relinearise: must be 0 or more, got {relinearise}")
        self.method, self.regulariser = method, regulariser
        self.device = torch.device(device)
        frame = DomainFrame.of(model.geometry)
        points = frame.normalise(voxel_centres(model.geometry, model.grid, model.mask))
        self.coords = torch.tensor(points, dtype=torch.float32, device=self.device)
        self.alpha, self.sigma = float(alpha), bandwidth(model.mesh, frame.scale, alpha)
        operator = model.operator
        self.a = torch.tensor(operator.whitened, dtype=torch.float32, device=self.device)
        self.w = torch.tensor(operator.weights, dtype=torch.float32, device=self.device)
        self.tikhonov = torch.tensor(tikhonov_operator(model).matrix, device=self.device)
        self.inr = INR(3, self.sigma, seed, features, width).to(self.device)
        self.initial = copy.deepcopy(self.inr.state_dict())
        self.max_iter, self.window, self.tol, self.carry = max_iter, window, tol, carry
        self.lr, self.relinearise = float(lr), int(relinearise)
        self.seed, self.frames = seed, 0

    @property
    def settings(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "sigma": self.sigma, "lr": self.lr, "max_iter": self.max_iter,
                "window": self.window, "tol": self.tol, "carry": self.carry,
                "relinearise": self.relinearise,
                "seed": self.seed, "features": self.inr.encoding.out_features // 2,
                "width": self.inr.mlp[0].out_features, **self.regulariser.settings}

    def push(self, dv: np.ndarray) -> FrameResult:
        self.frames += 1
        return self.timed(lambda: self._solve(dv))

    def _solve(self, dv: np.ndarray) -> tuple[np.ndarray, int, float]:
        dvt = torch.as_tensor(np.asarray(dv, dtype=np.float32), device=self.device)
        b = self.w * dvt
        energy = float(b.square().mean())
        if not self.carry or self.frames == 1 or energy == 0.0:
            self.inr.load_state_dict(self.initial)
        if energy == 0.0:
            return np.zeros(self.coords.shape[0], dtype=np.float32), 0, 0.0
        image = self.tikhonov @ dvt
        lo, hi = frame_range(image)
        self.inr.rescale((hi - lo) / 2 if hi > lo else 1.0)
        self.regulariser.weigh(image, energy)
        iterations, loss = self._fit(self.a, b, energy)

        def fit(lin: Relinearised) -> int:
            nonlocal loss
            a = torch.tensor(lin.operator.whitened, dtype=torch.float32, device=self.device)
            data = self.w * torch.as_tensor(lin.data, dtype=torch.float32, device=self.device)
            done, loss = self._fit(a, data, energy)
            return done

        iterations += gauss_newton(self.model, dv, self.relinearise, self._values, fit,
                                   lambda: copy.deepcopy(self.inr.state_dict()),
                                   self.inr.load_state_dict)
        with torch.no_grad():
            values = self.inr(self.coords)
        if self.relinearise:
            values = conductivity_change(values)
        return values.cpu().numpy(), iterations, loss

    def _values(self) -> np.ndarray:
        """The INR at the voxels (V,), float64 on the CPU."""
        with torch.no_grad():
            return self.inr(self.coords).double().cpu().numpy()

    def _fit(self, a: torch.Tensor, b: torch.Tensor, energy: float) -> tuple[int, float]:
        """Adam on (‖b - A x_θ‖²/M + λ R) / E until the stopping rule; (iterations, last loss)."""
        optimiser = torch.optim.Adam(self.inr.parameters(), lr=self.lr)
        losses: list[float] = []
        previous = float("inf")
        for it in range(1, self.max_iter + 1):
            values = self.inr(self.coords)
            loss = ((a @ values - b).square().mean()
                    + self.regulariser(self.inr, values)) / energy
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
            if it % self.window == 0:
                current = float(np.mean(losses[-self.window:]))
                if previous - current < self.tol * abs(previous):
                    break
                previous = current
        return it, losses[-1]

    def state_dict(self) -> dict[str, Any]:
        return {"frames": self.frames,
                "inr": {k: v.detach().cpu().clone() for k, v in self.inr.state_dict().items()},
                "scale": self.inr.scale,
                "regulariser": self.regulariser.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.frames = int(state["frames"])
        self.inr.load_state_dict({k: torch.as_tensor(v).to(self.device)
                                  for k, v in state["inr"].items()})
        self.inr.scale = float(state.get("scale", 1.0))  # states saved before s: unit 1
        self.regulariser.load_state_dict(state["regulariser"])
