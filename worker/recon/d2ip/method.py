"""D2IP as a per-session streaming reconstructor (paper III.A-C), and its ablation variants.

Per session: the 3D-FastResUNet phi(theta | Z) with its fixed input Z (from `seed`), one Adam
optimiser, the temporal window of recent volumes (eq. 9) and a frame counter. A frame is the
minimisation of eq. (11) over theta, `optimise_frame` of the core, from a starting point:

- **UPWS** (eq. 6-7): a network from Kaiming initialisation is optimised on one frame for
  `Iterations.cold` (1800) iterations without history; its weights and Adam moments are the warm
  start theta_1^(0) = theta_0^(N0) of the first frame. The warm start is stored once per
  configuration under `<cache dir>/d2ip-warmstart/<key>.pt` (atomic write; `warm_start_key`
  lists what the key hashes) and loaded by every later session with the same configuration;
  when none exists, the session's own first frame is the UPWS frame and the file is written for
  the next sessions.
- **TPP** (eq. 9): frame i + 1 starts where frame i ended, theta_{i+1}^(0) = theta_i^(N_i), and
  Adam's moments and step count carry over too. Restarting the moments would make Adam's first
  steps lr-sized sign steps on every parameter (the bias-corrected update m/sqrt(v) is +-1 for a
  fresh moment), a kick away from the converged weights; carried moments continue the descent as
  if the new frame were a change of target within one run. The warm start carries its moments
  for the same reason. `moments="reset"` starts every frame with a fresh Adam instead (weights
  still propagate); `moments="frames"` carries them between frames but not out of the warm
  start (whose moments belong to another frame's task); docs/d2ip.md has the measured trade-off.
- Iterations (paper IV.D, V.A.1): `cold` from Kaiming initialisation, `warm` (450) for a frame
  that starts from the warm start, `propagated` (250) for a frame that starts from the previous
  one. `schedule="adaptive"` stops each frame by `AdaptiveStop` within [min_iterations, that
  count]; UPWS always runs its full count (it is done once per configuration).

Variants (the ablation of paper V.A.1 and V.A.4, Fig. 5b and 8), all the same class:

| name | UPWS | TPP | 4D-TV | start of every frame |
|---|---|---|---|---|
| `d2ip` | yes | yes | yes | frame 1 warm start (450), later previous frame (250) |
| `d2ip-no-upws` | no | yes | yes | frame 1 Kaiming (1800), later previous frame (250) |
| `d2ip-no-tpp` | yes | no | yes | every frame from the warm start (450) |
| `dip` | no | no | no (lam = 0) | every frame from the same Kaiming init (1800) |
| `d2ip-scaled` | yes | yes | yes, lambda per frame | as `d2ip` (beyond the paper: `lambda_rule`) |

`dip` is the paper's "baseline DIP" of Fig. 5b, without acceleration and without handcrafted
priors; its `lam` can be set to put 4D-TV back (the red curve of Fig. 5b).

Data term: the whitened misfit (1/M) ||W^1/2 (J x - Delta v)||^2 of `worker.recon.spectral`
(as every baseline here; mean of w^2 is 1, so lambda keeps its scale); `whiten=False` gives the
paper's plain MSE. Output range gamma (eq. 3): symmetric [-a, a], a = `out_range`, default
`OUT_RANGE` = 0.75 (tuned on `healthy-deep-breath`, docs/d2ip.md: it caps the overshoot that
the linearisation gives large decreases; -1, the physical floor, is the core's default).
Initialisation: Kaiming, with the tail convolution at zero (`NetConfig.zero_tail`), so that
every cold start is the "no change" image. Device: `"auto"` takes CUDA when torch sees one
(the eager reference path there: the channels-last fast path is tuned for CPU oneDNN), else the
CPU; on the CPU runs are bitwise deterministic under `seed` for a given thread count.

State (`state_dict`): weights and Adam moments by parameter name, the warm start while it is
still needed (no-TPP variants), the window of recent volumes, the frame counter and the
configuration key; plain numpy arrays, numbers and strings, so `worker.runtime.state_codec`
stores it without pickles. Z and J are rebuilt from `seed` and the model.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import Tensor

from worker.forward.cache import cache_dir
from worker.recon.base import FrameResult, StreamingReconstructor, register
from worker.recon.d2ip.lambda_rule import KAPPA, DataScaledLambda
from worker.recon.d2ip.loss import LossConfig
from worker.recon.d2ip.mapping import OutputRange
from worker.recon.d2ip.network import FastResUNet3D, NetConfig, make_input
from worker.recon.d2ip.objective import Objective
from worker.recon.d2ip.optimise import (
    FIRST_FRAME_ITERATIONS,
    LATER_FRAME_ITERATIONS,
    LR_REAL,
    LR_SIMULATED,
    UPWS_ITERATIONS,
    AdaptiveStop,
    FixedIterations,
    StopRule,
    make_optimizer,
    optimise_frame,
)
from worker.recon.d2ip.optimise import FrameResult as CoreResult
from worker.recon.spectral import data_weights

if TYPE_CHECKING:
    from worker.forward.model import ForwardModel

WARM_START_FOLDER = "d2ip-warmstart"
OUT_RANGE = 0.75  # a of gamma = [-a, a] (eq. 3)
FORMAT = 1  # of the warm-start files and the state; part of the key
Schedule = Literal["paper", "adaptive"]
Data = Literal["simulated", "real"]
Start = Literal["cold", "warm", "propagated"]
Moments = dict[str, dict[str, np.ndarray]]
LambdaRule = Literal["fixed", "data"]


@dataclass(frozen=True)
class Iterations:
    """Adam iterations of a frame by where it starts (paper IV.D: 1800:450:250)."""

    cold: int = UPWS_ITERATIONS.n  # Kaiming initialisation: UPWS (eq. 6), every frame of `dip`
    warm: int = FIRST_FRAME_ITERATIONS.n  # from the warm start (eq. 7)
    propagated: int = LATER_FRAME_ITERATIONS.n  # from the previous frame (TPP, eq. 9)

    def __post_init__(self) -> None:
        if min(self.cold, self.warm, self.propagated) < 1:
            raise ValueError(f"iterations: must be positive, got {self}")


@dataclass(frozen=True)
class Snapshot:
    """Network weights and Adam moments by parameter name (a starting point theta^(0))."""

    weights: dict[str, np.ndarray]
    moments: Moments

    def as_state(self) -> dict[str, Any]:
        return {"weights": self.weights, "moments": self.moments}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Snapshot:
        return cls(weights={k: np.asarray(v) for k, v in state["weights"].items()},
                   moments={k: {m: np.asarray(a) for m, a in v.items()}
                            for k, v in state["moments"].items()})


def resolve_device(device: str) -> torch.device:
    """"auto": CUDA when available, else the CPU; otherwise the named device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: CUDA is not available")
    return dev


def _config(cls: type, value: Any) -> Any:
    """A frozen config dataclass from itself, a mapping of its fields, or None (defaults)."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    fields = dict(value)
    if "widths" in fields:
        fields["widths"] = tuple(fields["widths"])
    if "aspp_dilations" in fields:
        fields["aspp_dilations"] = tuple(fields["aspp_dilations"])
    return cls(**fields)


@register("d2ip")
class D2IP(StreamingReconstructor):
    """D2IP streaming reconstructor; `upws`/`tpp` and `lam` select the variants (module doc).

    Options: `device` ("cpu", "cuda", "auto"); `data` ("simulated": lr 5e-4, "real": lr 1e-4,
    paper IV.D) or `lr`; `schedule` ("paper" fixed counts, "adaptive" `AdaptiveStop` within
    [`min_iterations`, count], stopping below a relative decrease `adaptive_tol`);
    `iterations` (cold, warm, propagated); `upws`, `tpp`; `seed`
    (Z and Kaiming weights); `net` (`NetConfig` fields); `lam`, `lam_s`, `lam_t`, `window`
    (`LossConfig`, eq. 11); `lam_rule` ("fixed": `lam` every frame, as the paper; "data": the
    per-frame `DataScaledLambda` with `kappa`); `out_range` (a of gamma = [-a, a], eq. 3);
    `whiten` (data weights);
    `moments` ("carry" Adam's moments into the next frame and out of the warm start, "frames"
    carry them from frame to frame but start the first frame with a fresh Adam, "reset" them
    every frame);
    `warm_start_dir` (folder of the warm-start files; default `<cache dir>/d2ip-warmstart`).
    """

    method = "d2ip"

    def __init__(self, model: ForwardModel, device: str = "auto", data: Data = "simulated",
                 lr: float | None = None, schedule: Schedule = "paper",
                 iterations: Iterations | tuple[int, int, int] | None = None,
                 min_iterations: int = 50, adaptive_tol: float = AdaptiveStop.tol,
                 upws: bool = True, tpp: bool = True, seed: int = 0,
                 net: NetConfig | Mapping[str, Any] | None = None,
                 lam: float = LossConfig.lam, lam_s: float = LossConfig.lam_s,
                 lam_t: float = LossConfig.lam_t, window: int = LossConfig.window,
                 lam_rule: LambdaRule = "fixed", kappa: float = KAPPA,
                 out_range: float = OUT_RANGE, whiten: bool = True,
                 moments: Literal["carry", "frames", "reset"] = "carry",
                 warm_start_dir: str | Path | None = None, name: str = "d2ip") -> None:
        """See the class docstring; `name` is the registry name (set by the variants)."""
        super().__init__(model)
        if data not in ("simulated", "real"):
            raise ValueError(f"data: expected 'simulated' or 'real', got {data!r}")
        if schedule not in ("paper", "adaptive"):
            raise ValueError(f"schedule: expected 'paper' or 'adaptive', got {schedule!r}")
        if moments not in ("carry", "frames", "reset"):
            raise ValueError(f"moments: expected 'carry', 'frames' or 'reset', got {moments!r}")
        if lam_rule not in ("fixed", "data"):
            raise ValueError(f"lam_rule: expected 'fixed' or 'data', got {lam_rule!r}")
        self.method = name
        self.device = resolve_device(device)
        self.data = data
        self.lr = float(lr) if lr is not None else (LR_SIMULATED if data == "simulated"
                                                    else LR_REAL)
        self.schedule: Schedule = schedule
        self.iterations = (iterations if isinstance(iterations, Iterations)
                           else Iterations(*iterations) if iterations is not None
                           else Iterations())
        self.min_iterations = int(min_iterations)
        if not adaptive_tol > 0:
            raise ValueError(f"adaptive_tol: must be positive, got {adaptive_tol}")
        self.adaptive_tol = float(adaptive_tol)
        self.upws, self.tpp, self.seed = bool(upws), bool(tpp), int(seed)
        self.net_config: NetConfig = _config(NetConfig, net)
        self.loss_config = LossConfig(lam=float(lam), lam_s=float(lam_s), lam_t=float(lam_t),
                                      window=int(window))
        self.lam_rule: LambdaRule = lam_rule
        self.kappa = float(kappa)
        self.out_range = OutputRange.symmetric(float(out_range))
        self.whiten = bool(whiten)
        self.moments = moments
        self.warm_start_dir = (Path(warm_start_dir) if warm_start_dir is not None
                               else cache_dir() / WARM_START_FOLDER)
        self.key = warm_start_key(self)  # what the warm start (and the state) depend on

        w = data_weights(model) if self.whiten else np.ones(model.n_measurements)
        self.w = torch.tensor(w, dtype=torch.float32, device=self.device)
        self.lam_of = (DataScaledLambda(model, w, self.kappa, self.loss_config.eps)
                       if lam_rule == "data" else None)
        jac = torch.tensor(model.jacobian * w[:, None], dtype=torch.float32, device=self.device)
        self.net = FastResUNet3D(self.net_config, seed=self.seed).to(self.device)
        self.optimizer = make_optimizer(self.net, self.lr)
        self.kaiming = self.snapshot(moments=False)  # a fresh network and a fresh Adam
        z = make_input(self.seed, model.grid.shape, self.net_config.in_channels)
        self.objective = Objective(self.net, z.to(self.device), jac,
                                   torch.as_tensor(model.mask, device=self.device),
                                   loss=self.loss_config, out_range=self.out_range,
                                   fast=self.device.type == "cpu")
        self.window = self.objective.new_window()
        self.frames = 0
        self.warm: Snapshot | None = None  # the UPWS result while frames still start from it
        self.warm_source: Literal["loaded", "computed"] | None = None
        self.upws_runs = 0  # UPWS optimisations this object ran (0 when the file was reused)
        self.last: CoreResult | None = None  # diagnostics of the last frame (loss histories)

    # --- configuration -------------------------------------------------------------------

    @property
    def warm_start_path(self) -> Path:
        """This configuration's file in the warm-start store."""
        return self.warm_start_dir / f"{self.key}.pt"

    @property
    def settings(self) -> dict[str, Any]:
        return {"variant": self.method, "upws": self.upws, "tpp": self.tpp, "lr": self.lr,
                "data": self.data, "schedule": self.schedule,
                "iterations": asdict(self.iterations), "min_iterations": self.min_iterations,
                "adaptive_tol": self.adaptive_tol,
                "seed": self.seed, "net": asdict(self.net_config),
                "loss": asdict(self.loss_config), "lam_rule": self.lam_rule,
                **({"kappa": self.kappa} if self.lam_rule == "data" else {}),
                "out_range": [self.out_range.lo, self.out_range.hi], "whiten": self.whiten,
                "moments": self.moments,
                "device": str(self.device), "warm_start": {"key": self.key,
                                                           "source": self.warm_source}}

    # --- frames ---------------------------------------------------------------------------

    def push(self, dv: np.ndarray) -> FrameResult:
        """Reconstruct the next frame; iterations include a UPWS run that this frame caused."""
        def run() -> tuple[np.ndarray, int, float]:
            before = self.upws_runs
            result = self.fit(dv)
            extra = self.iterations.cold * (self.upws_runs - before)
            return result.values.cpu().numpy(), result.iterations + extra, result.loss

        return self.timed(run)

    def fit(self, dv: np.ndarray, stop: StopRule | None = None) -> CoreResult:
        """Minimise eq. (11) for the next frame from its starting point; `stop` overrides the
        schedule. Pushes the result into the temporal window and returns the core result."""
        if self.frames == 0 or not self.tpp:
            start: Start = self.restart(dv)
        else:
            start = "propagated"
        if self.moments == "reset":
            self.optimizer = make_optimizer(self.net, self.lr)
        result = optimise_frame(self.objective, self.optimizer, self.measurements(dv),
                                self.window, stop or self.stop_rule(start),
                                lam=self.frame_lambda(dv))
        self.window.push(result.values)
        self.frames += 1
        if self.tpp:
            self.warm = None  # later frames start from the previous one
        self.last = result
        return result

    def frame_lambda(self, dv: np.ndarray) -> float | None:
        """lambda_TV of frame `dv`: None (the fixed `LossConfig.lam`) or the data-scaled rule."""
        return self.lam_of(dv) if self.lam_of is not None else None

    def measurements(self, dv: np.ndarray) -> Tensor:
        """W^1/2 Delta v on the device (Delta v itself when not whitening)."""
        return torch.as_tensor(np.asarray(dv, dtype=np.float32), device=self.device) * self.w

    def stop_rule(self, start: Start) -> StopRule:
        """The frame's stopping rule: its count by start (paper), or adaptive within it."""
        n = getattr(self.iterations, start)
        if self.schedule == "paper":
            return FixedIterations(n)
        return AdaptiveStop(min_iter=min(self.min_iterations, n), max_iter=n,
                            tol=self.adaptive_tol)

    def restart(self, dv: np.ndarray) -> Start:
        """Put the network and Adam at a frame's starting point: the warm start (UPWS, eq. 7;
        obtained first if needed, from `dv` when no file exists) or the Kaiming init."""
        if not self.upws:
            self.load_snapshot(self.kaiming)
            return "cold"
        warm = self.ensure_warm_start(dv)
        self.load_snapshot(warm if self.moments == "carry" else Snapshot(warm.weights, {}))
        return "warm"

    # --- UPWS -----------------------------------------------------------------------------

    def ensure_warm_start(self, dv: np.ndarray) -> Snapshot:
        """The warm start held, else the stored one, else UPWS on frame `dv` (stored)."""
        if self.warm is None:
            self.warm = self.read_warm_start() or self.warm_start(dv)
        return self.warm

    def warm_start(self, dv: np.ndarray) -> Snapshot:
        """UPWS (eq. 6): `Iterations.cold` iterations from Kaiming init on frame `dv`, no
        history; stores the result as this configuration's warm start and returns it."""
        self.load_snapshot(self.kaiming)
        result = optimise_frame(self.objective, self.optimizer, self.measurements(dv), None,
                                FixedIterations(self.iterations.cold),
                                lam=self.frame_lambda(dv))
        self.upws_runs += 1
        snap = self.snapshot()
        meta = {"format": FORMAT, "key": self.key, "iterations": self.iterations.cold,
                "data_loss": result.data_loss, "loss": result.loss,
                "frame_rms": float(np.sqrt(np.mean(np.square(dv))))}
        self.warm_start_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=self.warm_start_dir, prefix=".tmp-", suffix=".pt",
                                         delete=False) as fh:
            try:
                torch.save({"meta": meta, **_tensors(snap.as_state())}, fh)
            except BaseException:
                os.unlink(fh.name)
                raise
        os.replace(fh.name, self.warm_start_path)
        self.warm_source = "computed"
        return snap

    def read_warm_start(self) -> Snapshot | None:
        """This configuration's stored warm start, or None when absent or unreadable."""
        try:
            stored = torch.load(self.warm_start_path, map_location="cpu", weights_only=True)
            if stored["meta"]["key"] != self.key:
                return None
            snap = Snapshot.from_state(_arrays(stored))
        except (OSError, RuntimeError, KeyError, ValueError, EOFError, pickle.UnpicklingError):
            return None
        self.warm_source = "loaded"
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
        self.optimizer = make_optimizer(self.net, self.lr)
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


def warm_start_key(recon: D2IP) -> str:
    """sha256 over the model spec, net config, seed, loss config (and the lambda rule with its
    kappa when it is "data"), output range, whitening, learning rate, UPWS iteration count and
    `FORMAT`: what the UPWS weights depend on
    (the variant does not: `d2ip` and `d2ip-no-tpp` share a warm start)."""
    text = json.dumps({"format": FORMAT, "model": recon.model.spec,
                       "net": asdict(recon.net_config), "seed": recon.seed,
                       "loss": asdict(recon.loss_config),
                       **({"lam_rule": "data", "kappa": recon.kappa}
                          if recon.lam_rule == "data" else {}),
                       "out_range": [recon.out_range.lo, recon.out_range.hi],
                       "whiten": recon.whiten, "lr": recon.lr,
                       "iterations": recon.iterations.cold}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _tensors(tree: Any) -> Any:
    """numpy arrays -> CPU tensors throughout a nested dict (for `torch.save`)."""
    if isinstance(tree, np.ndarray):
        return torch.from_numpy(tree)
    if isinstance(tree, dict):
        return {k: _tensors(v) for k, v in tree.items()}
    return tree


def _arrays(tree: Any) -> Any:
    """CPU tensors -> numpy arrays throughout a nested dict."""
    if isinstance(tree, Tensor):
        return tree.numpy()
    if isinstance(tree, dict):
        return {k: _arrays(v) for k, v in tree.items()}
    return tree


Flags = dict[str, bool]
VARIANTS: dict[str, tuple[Flags, dict[str, Any]]] = {  # name: (fixed flags, default options)
    "d2ip-no-upws": ({"upws": False, "tpp": True}, {}),
    "d2ip-no-tpp": ({"upws": True, "tpp": False}, {}),
    # no handcrafted prior (paper Fig. 5b); lam > 0 puts 4D-TV back (Fig. 5b's red curve)
    "dip": ({"upws": False, "tpp": False}, {"lam": 0.0, "lam_rule": "fixed"}),
    # beyond the paper: the data-scaled per-frame lambda (`lambda_rule`)
    "d2ip-scaled": ({"upws": True, "tpp": True}, {"lam_rule": "data"}),
}


def _register(name: str, flags: Flags, defaults: dict[str, Any]) -> None:
    """Register `name` as D2IP with `flags` (UPWS, TPP) fixed and `defaults` as its defaults."""

    def factory(model: ForwardModel, device: str = "auto", **options: Any) -> D2IP:
        if fixed := sorted(set(options) & set(flags)):
            raise TypeError(f"{name}: {', '.join(fixed)} fixed by the variant")
        return D2IP(model, device=device, name=name, **{**defaults, **options, **flags})

    factory.__doc__ = f"D2IP variant {name!r}: {flags}, defaults {defaults}."
    register(name)(factory)


for _name, (_flags, _defaults) in VARIANTS.items():
    _register(_name, _flags, _defaults)
