"""R-SIP, the regularised shallow image prior (Liu et al.; the R-SIP baseline of D2IP IV.C).

A shallow network maps a fixed input to the V voxel values, x = f(θ | z); per frame, Adam fits
θ to the data with a handcrafted TV prior (D2IP eq. (2) with the spatial term of eq. (12)):

    L(θ) = ‖W^½(Δv - J f(θ | z))‖² + λ TV_ε(f(θ | z))

(TV: `worker.recon.finite_difference`; λ and ε per frame: `worker.recon.lambda_rule`)

R-SIP's code is not public; what we assume (docs/reconstruction.md lists it too):
- f is a three-layer MLP, Linear(N_IN, WIDTH) - LeakyReLU(0.2) - Linear(WIDTH, WIDTH) -
  LeakyReLU(0.2) - Linear(WIDTH, V), linear output (Δσ/σ0 takes either sign);
- z ~ U(0, 1)^N_IN is fixed noise drawn once from `seed` (as D2IP's Z, eq. 3);
- PyTorch's default initialisation under `seed`, except the output layer, which starts at
  zero, so the first image is x = 0 rather than the MLP's random pattern;
- Adam with learning rate `lr`, a fixed number of iterations per frame (the stopping rule):
  `first_iterations` from the initialisation, `iterations` when warm-started;
- warm start (the default): weights and Adam moments carry over from frame to frame, as a
  streaming monitor would run it; `warm_start=False` re-initialises every frame from `seed`
  (R-SIP as a single-frame method, as D2IP's comparison ran it), `first_iterations` a frame;
- the whitened data term of `worker.forward.operator`, like every method here.
Deterministic on the CPU under `seed`. State: weights, Adam moments, frame counter and seed.
A frame without data (Δv = 0) gives x = 0 and leaves the weights alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from worker.recon.base import FrameResult, StreamingReconstructor, register
from worker.recon.finite_difference import MaskedDifference, total_variation
from worker.recon.lambda_rule import KAPPA, DataScaledLambda
from worker.recon.tikhonov import tikhonov_operator

if TYPE_CHECKING:
    from worker.forward.model import ForwardModel

N_IN = 64
WIDTH = 256
LR = 1e-3
FIRST_ITERATIONS = 1000
ITERATIONS = 200


def shallow_prior(n_out: int, seed: int) -> nn.Sequential:
    """The three-layer MLP, initialised from `seed` (the global RNG is left alone)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Linear(N_IN, WIDTH), nn.LeakyReLU(0.2),
                            nn.Linear(WIDTH, WIDTH), nn.LeakyReLU(0.2),
                            nn.Linear(WIDTH, n_out))
    nn.init.zeros_(net[-1].weight)
    nn.init.zeros_(net[-1].bias)
    return net


@register("rsip")
class RSIP(StreamingReconstructor):
    """Per-frame Adam fit of a shallow MLP prior with TV, warm-started by default."""

    method = "rsip"

    def __init__(self, model: ForwardModel, lam: float | None = None, seed: int = 0,
                 warm_start: bool = True, lr: float = LR,
                 first_iterations: int = FIRST_ITERATIONS, iterations: int = ITERATIONS,
                 device: str = "cpu") -> None:
        super().__init__(model)
        self.device = torch.device(device)
        operator = model.operator
        self.w = torch.tensor(operator.weights, dtype=torch.float32, device=self.device)
        self.a = torch.tensor(operator.whitened, dtype=torch.float32, device=self.device)
        self.tikhonov = torch.tensor(tikhonov_operator(model).matrix, device=self.device)
        self.difference = MaskedDifference(model.mask, self.device)
        self.rule = DataScaledLambda(self.difference)
        self.lam, self.warm_start, self.lr = lam, warm_start, lr
        self.first_iterations, self.iterations = first_iterations, iterations
        self.frames = 0
        self._reset(seed)

    def _reset(self, seed: int) -> None:
        """Network, fixed input and a fresh Adam from `seed`."""
        self.seed = seed
        gen = torch.Generator().manual_seed(seed)
        self.z = torch.rand(N_IN, generator=gen).to(self.device)
        self.net = shallow_prior(self.difference.n_voxels, seed).to(self.device)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=self.lr)
        self.fresh = True

    @property
    def settings(self) -> dict[str, Any]:
        return {"lam": self.lam if self.lam is not None else f"kappa={KAPPA}", "seed": self.seed,
                "warm_start": self.warm_start, "lr": self.lr,
                "iterations": [self.first_iterations, self.iterations],
                "n_in": N_IN, "width": WIDTH}

    def push(self, dv: np.ndarray) -> FrameResult:
        self.frames += 1
        return self.timed(lambda: self._fit(dv))

    def _fit(self, dv: np.ndarray) -> tuple[np.ndarray, int, float]:
        dvt = torch.as_tensor(np.asarray(dv, dtype=np.float32), device=self.device)
        b = self.w * dvt
        energy = float(b.square().sum())
        if energy == 0.0:
            return np.zeros(self.difference.n_voxels, dtype=np.float32), 0, 0.0
        if not self.warm_start and not self.fresh:
            self._reset(self.seed)
        with torch.no_grad():
            frame = self.rule(self.tikhonov @ dvt, energy)
        lam, eps = (frame.lam if self.lam is None else float(self.lam)), frame.eps
        iterations = self.first_iterations if self.fresh else self.iterations
        self.fresh = False
        for _ in range(iterations):
            self.optimizer.zero_grad()
            loss = self._loss(b, lam, eps)[0]
            loss.backward()
            self.optimizer.step()
        with torch.no_grad():
            loss, x = self._loss(b, lam, eps)
        return x.cpu().numpy(), iterations, float(loss)

    def _loss(self, b: Tensor, lam: float, eps: float) -> tuple[Tensor, Tensor]:
        """(L(θ), f(θ | z))."""
        x = self.net(self.z)
        return (b - self.a @ x).square().sum() + lam * total_variation(x, self.difference, eps), x

    def state_dict(self) -> dict[str, Any]:
        return {"frames": self.frames, "seed": self.seed, "fresh": self.fresh,
                "net": {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()},
                "optimizer": _cpu(self.optimizer.state_dict())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._reset(int(state["seed"]))
        self.net.load_state_dict({k: torch.as_tensor(v) for k, v in state["net"].items()})
        self.optimizer.load_state_dict(_tensors(state["optimizer"]))
        self.frames, self.fresh = int(state["frames"]), bool(state["fresh"])


def _cpu(tree: Any) -> Any:
    """A deep copy of an optimizer state with every tensor cloned to the CPU."""
    if isinstance(tree, Tensor):
        return tree.detach().cpu().clone()
    if isinstance(tree, dict):
        return {k: _cpu(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_cpu(v) for v in tree)
    return tree


def _tensors(tree: Any) -> Any:
    """Numpy arrays (as a checkpoint codec may return them) back to tensors."""
    if isinstance(tree, np.ndarray):
        return torch.from_numpy(np.array(tree))
    if isinstance(tree, dict):
        return {k: _tensors(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_tensors(v) for v in tree)
    return tree
