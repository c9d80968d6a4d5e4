"""D2IP as a per-session streaming reconstructor (paper III.A-C).

Per session: the 3D-FastResUNet phi(theta | Z) with its fixed input Z (from the seed), one Adam
optimiser, the temporal window of recent volumes (eq. 13) and a frame counter. A frame is the
minimisation of eq. (14) over theta (`optimise.optimise_frame`) from a starting point:

- **UPWS** (eq. 6-7): a network from Kaiming initialisation is optimised on one frame for
  `Iterations.cold` (1800) iterations without history; its weights and Adam moments are the warm
  start theta_1^(0) = theta_0^(N0) of the first frame, kept in the `WarmStartStore` for every
  later session with the same configuration; when none is stored, the session's own first frame
  is the UPWS frame and the result is stored for the next sessions.
- **TPP** (eq. 9): frame i + 1 starts where frame i ended, theta_{i+1}^(0) = theta_i^(N_i), and
  Adam's moments and step count carry over too (also out of the warm start): a fresh Adam's
  first steps are lr-sized sign steps on every parameter, a kick away from the converged
  weights; carried moments continue the descent as if the new frame were a change of target.
- Iterations (paper IV.D, V.A.1): `cold` from Kaiming initialisation, `warm` (450) for a frame
  that starts from the warm start, `propagated` (250) for a frame that starts from the previous
  one; the configuration's schedule turns a count into the frame's stopping rule. UPWS always
  runs its full count (it is done once per configuration).

The output of a frame is gamma(phi(theta_i^(N_i) | Z)) inside the mask (eq. 5, 8, 10). How the
pieces are computed (plain torch, or the CPU's fused kernels) is the `execution` strategy's
business (`execution.py`); the variants and the choice of strategy are in `variants.py`.

State (`state_dict`): weights and Adam moments by parameter name, the warm start while it is
still needed (no-TPP variants), the window of recent volumes, the frame counter and the
configuration key; plain numpy arrays, numbers and strings, so `worker.runtime.state_codec`
stores it without pickles. Z and J are rebuilt from the seed and the model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import Tensor

from worker.recon.base import FrameResult, StreamingReconstructor
from worker.recon.d2ip.config import D2IPConfig
from worker.recon.d2ip.data_term import RANGE_RTOL, whitened_system
from worker.recon.d2ip.execution import Execution, ReferenceExecution
from worker.recon.d2ip.network import FastResUNet3D, make_input
from worker.recon.d2ip.optimise import FixedIterations, StopRule, optimise_frame
from worker.recon.d2ip.optimise import FrameResult as CoreResult
from worker.recon.d2ip.prior import VolumeWindow
from worker.recon.d2ip.warm_start import FORMAT, Snapshot, WarmStartStore, warm_start_key

if TYPE_CHECKING:
    from worker.forward.model import ForwardModel

Start = Literal["cold", "warm", "propagated"]
WARM_START_STEP = "D2IP warm start"  # the step `on_warmup` names during UPWS


def resolve_device(device: str) -> torch.device:
    """"auto": CUDA when available, else the CPU; otherwise the named device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: CUDA is not available")
    return dev


class D2IP(StreamingReconstructor):
    """The D2IP streaming reconstructor of `config` on `device`, computed by `execution`
    (default: the plain-torch reference)."""

    method = "d2ip"

    def __init__(self, model: ForwardModel, config: D2IPConfig | None = None,
                 device: str | torch.device = "cpu",
                 execution: Execution | None = None) -> None:
        super().__init__(model)
        self.config = cfg = config or D2IPConfig()
        self.method = cfg.variant
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.execution = execution or ReferenceExecution()
        self.lr = cfg.learning_rate
        self.key = warm_start_key(model.spec, cfg)  # what the warm start (and the state) need
        self.store = WarmStartStore(self.key, cfg.warm_start_dir)

        operator = whitened_system(model, cfg.whiten)
        self.data_weights = torch.tensor(operator.weights, dtype=torch.float32, device=self.device)
        self.frame_lambda = cfg.lam_rule.bind(model, operator.weights, cfg.loss)  # dv -> lambda
        self.frame_range = cfg.out_range.bind(model)  # dv -> gamma's range (eq. 3)
        self.net = FastResUNet3D(cfg.net, seed=cfg.seed).to(self.device)
        self.optimizer = self.execution.optimizer(self.net, self.lr)
        self.kaiming = self.snapshot(moments=False)  # a fresh network and a fresh Adam
        z = make_input(cfg.seed, model.grid.shape, cfg.net.in_channels).to(self.device)
        self.objective = self.execution.objective(
            self.net, z, torch.tensor(operator.whitened, dtype=torch.float32, device=self.device),
            torch.as_tensor(model.mask, device=self.device), loss=cfg.loss,
            out_range=self.frame_range(np.zeros(model.n_measurements, dtype=np.float32)),
            data_basis=torch.from_numpy(operator.range_basis(RANGE_RTOL)).to(self.device))
        self.window = self.objective.new_window()
        self.frames = 0
        self.warm: Snapshot | None = None  # the UPWS result while frames still start from it
        self.warm_source: Literal["loaded", "computed"] | None = None
        self.upws_runs = 0  # UPWS optimisations this object ran (0 when the file was reused)
        self.last: CoreResult | None = None  # diagnostics of the last frame (loss histories)

    @property
    def settings(self) -> dict[str, Any]:
        return {**self.config.settings(), "device": str(self.device),
                "execution": self.execution.name,
                "warm_start": {"key": self.key, "source": self.warm_source}}

    # --- frames ---------------------------------------------------------------------------

    def push(self, dv: np.ndarray) -> FrameResult:
        """Reconstruct the next frame; iterations include a UPWS run that this frame caused."""
        def run() -> tuple[np.ndarray, int, float]:
            before = self.upws_runs
            result = self.fit(dv)
            extra = self.config.iterations.cold * (self.upws_runs - before)
            return result.values.cpu().numpy(), result.iterations + extra, result.loss

        return self.timed(run)

    def fit(self, dv: np.ndarray, stop: StopRule | None = None) -> CoreResult:
        """Minimise eq. (14) for the next frame from its starting point; `stop` overrides the
        schedule. Pushes the result into the temporal window and returns the core result."""
        start: Start = "propagated"
        if self.frames == 0 or not self.config.tpp:
            start = self.restart(dv)
        result = self._optimise(dv, self.window, stop or self.stop_rule(start))
        self.window.push(result.values)
        self.frames += 1
        if self.config.tpp:
            self.warm = None  # later frames start from the previous one
        self.last = result
        return result

    def _optimise(self, dv: np.ndarray, window: VolumeWindow | None, stop: StopRule,
                  on_iteration: Callable[[int, float], None] | None = None) -> CoreResult:
        """`optimise_frame` on frame `dv` with the frame's lambda and range, and the strategy's
        hook; `on_iteration(k, loss)` after step k."""
        self.objective.out_range = self.frame_range(dv)
        return optimise_frame(self.objective, self.optimizer, self.measurements(dv), window,
                              stop, on_iteration, lam=self.frame_lambda(dv),
                              hook=self.execution.hook)

    def measurements(self, dv: np.ndarray) -> Tensor:
        """W^1/2 Delta v on the device (Delta v itself when not whitening)."""
        values = torch.as_tensor(np.asarray(dv, dtype=np.float32), device=self.device)
        return values * self.data_weights

    def stop_rule(self, start: Start) -> StopRule:
        """The frame's stopping rule: the schedule's for its count by start."""
        return self.config.schedule.stop(getattr(self.config.iterations, start))

    def restart(self, dv: np.ndarray) -> Start:
        """Put the network and Adam at a frame's starting point: the warm start (UPWS, eq. 7;
        obtained first if needed, from `dv` when none is stored) or the Kaiming init."""
        if not self.config.upws:
            self.load_snapshot(self.kaiming)
            return "cold"
        self.load_snapshot(self.ensure_warm_start(dv))
        return "warm"

    # --- UPWS -----------------------------------------------------------------------------

    def ensure_warm_start(self, dv: np.ndarray) -> Snapshot:
        """The warm start held, else the stored one, else UPWS on frame `dv` (stored)."""
        if self.warm is None:
            stored = self.store.read()
            if stored is not None:
                self.warm_source = "loaded"
            self.warm = stored or self.warm_start(dv)
        return self.warm

    def warm_start(self, dv: np.ndarray) -> Snapshot:
        """UPWS (eq. 6): `Iterations.cold` iterations from Kaiming init on frame `dv`, no
        history; stores the result as this configuration's warm start and returns it. Tells
        `on_warmup` (when set) after every iteration."""
        self.load_snapshot(self.kaiming)
        cold = self.config.iterations.cold
        hook = self.on_warmup
        result = self._optimise(dv, None, FixedIterations(cold), None if hook is None else
                                lambda k, _loss: hook(WARM_START_STEP, k, cold))
        self.upws_runs += 1
        snap = self.snapshot()
        self.store.write(snap, {"iterations": cold, "data_loss": result.data_loss,
                                "loss": result.loss,
                                "frame_rms": float(np.sqrt(np.mean(np.square(dv))))})
        self.warm_source = "computed"
        return snap

    # --- weights, moments and state -------------------------------------------------------

    def snapshot(self, moments: bool = True) -> Snapshot:
        """The current weights and (unless `moments=False`) Adam moments, as numpy copies."""
        return Snapshot(
            weights={n: p.detach().cpu().numpy().copy() for n, p in self.net.named_parameters()},
            moments={n: {k: v.detach().cpu().numpy().copy() for k, v in st.items()}
                     for n, st in self.optimizer.moments().items()} if moments else {})

    def load_snapshot(self, snap: Snapshot) -> None:
        """Set the weights and Adam moments (a fresh Adam when the snapshot has none)."""
        with torch.no_grad():
            for n, p in self.net.named_parameters():
                p.copy_(torch.from_numpy(np.array(snap.weights[n])))
        self.optimizer = self.execution.optimizer(self.net, self.lr)
        if snap.moments:
            self.optimizer.load_moments({
                n: {k: torch.from_numpy(np.array(v)) for k, v in st.items()}
                for n, st in snap.moments.items()})

    def state_dict(self) -> dict[str, Any]:
        window = self.window.state_dict()
        return {"format": FORMAT, "method": self.method, "key": self.key, "frames": self.frames,
                "upws_runs": self.upws_runs, "warm_source": self.warm_source,
                "current": self.snapshot().as_state(),
                "warm": self.warm.as_state() if self.warm is not None else None,
                "window": {"frames": window["frames"].cpu().numpy(),
                           "count": int(window["count"])}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("format") != FORMAT or state.get("key") != self.key:
            raise ValueError("d2ip state: made with another configuration or format "
                             f"(key {state.get('key')!r}, expected {self.key!r})")
        self.load_snapshot(Snapshot.from_state(state["current"]))
        self.warm = Snapshot.from_state(state["warm"]) if state["warm"] is not None else None
        self.window.load_state_dict({"frames": torch.from_numpy(np.array(state["window"]
                                                                        ["frames"])),
                                     "count": int(state["window"]["count"])})
        self.frames, self.upws_runs = int(state["frames"]), int(state["upws_runs"])
        self.warm_source = state["warm_source"]
