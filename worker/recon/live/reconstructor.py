"""`d2ip-live` as a per-session streaming reconstructor (docs/d2ip-live.md).

- **Frame path** (`push`): the Tikhonov preview R Δv (`worker.recon.tikhonov`, the served
  preview's own truncated factors and single-frame product), scaled, is the
  input of the network phi(theta | preview); its values x = gamma(phi) inside the mask (eq. 3),
  one forward pass with the current weights and no gradient, are scaled by their least-squares
  amplitude against the frame's data, alpha = <A x, W^1/2 Δv> / ||A x||^2 (A the whitened J;
  the product the data term makes anyway), and read as the log-conductivity change
  ln(σ/σ0): the frame's volume is Δσ/σ0 = exp(alpha x) - 1. J is the derivative of the
  normalised voltages with respect to ln σ at σ0, and the linearisation in ln σ is the more
  accurate one for the lungs' large changes (docs/d2ip-live.md, "Amplitude").
- **Fine-tuning** (`background_step`): one Adam iteration of D2IP's eq. (14) (data term through
  the whitened operator, lambda_TV times the 4D-TV of eq. 11) with the input of one sample:
  in turn the frames of the window of recent frames, with the fitted values of the frames
  before it (alpha x, before exp) as the temporal window of eq. (13), and every
  `tidal_every`-th step the tidal difference Δv(end-inspiration) - Δv(end-expiration) of
  the last `tidal_frames` frames (largest and smallest global impedance of their previews:
  the last breath when the span holds one breath period), with the previous tidal volume as
  its temporal window. The weights and Adam's moments carry over from step to step and frame
  to frame: TPP (eq. 9) without frame boundaries. Who calls it, and when, is the caller's
  business (the worker's compute thread between frames, `worker.runtime.compute`; the
  benchmark's virtual clock).

State (`state_dict`): weights, Adam moments, the window (Δv and fitted values), the global
curve's span (Δv and values), the last tidal volume and the counters; numpy arrays and numbers.
"""

from __future__ import annotations

import contextlib
from collections import deque
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from worker.recon.base import FrameResult, StreamingReconstructor, register
from worker.recon.d2ip.config import OUT_RANGE
from worker.recon.d2ip.cpu import execution_for
from worker.recon.d2ip.data_term import RANGE_RTOL, whitened_system
from worker.recon.d2ip.mapping import OutputRange
from worker.recon.d2ip.network import FastResUNet3D, NetConfig
from worker.recon.d2ip.prior import VolumeWindow
from worker.recon.d2ip.reconstructor import resolve_device
from worker.recon.live.config import LiveConfig
from worker.recon.live.start import initial_state, network_input
from worker.recon.tikhonov import Tikhonov

if TYPE_CHECKING:
    from worker.forward.model import ForwardModel

FORMAT = 1


@register("d2ip-live")
class D2IPLive(StreamingReconstructor):
    """Every frame one forward pass on its preview; `background_step` fine-tunes."""

    method = "d2ip-live"

    def __init__(self, model: ForwardModel, device: str = "auto", **options: Any) -> None:
        super().__init__(model)
        self.config = cfg = LiveConfig(**options)
        self.device = resolve_device(device)
        self.execution = execution_for(self.device)
        self.out_range = OutputRange.symmetric(OUT_RANGE)
        self.preview = Tikhonov(model, device=str(self.device))  # its truncated factors
        start = initial_state(model, cfg, self.preview.images, self.execution, self.out_range)
        self.input_scale, self.start_source = start.input_scale, start.source
        self.mask = torch.as_tensor(model.mask, device=self.device)
        self.net = FastResUNet3D(NetConfig(), seed=cfg.seed).to(self.device)
        with torch.no_grad():
            for n, p in self.net.named_parameters():
                p.copy_(torch.from_numpy(start.weights[n]))
        self.optimizer = self.execution.optimizer(self.net, cfg.lr)
        operator = whitened_system(model)
        self.data_weights = torch.tensor(operator.weights, dtype=torch.float32,
                                         device=self.device)
        self.input = torch.zeros((1, 1, *model.grid.shape), device=self.device)
        self.objective = self.execution.objective(
            self.net, self.input,
            torch.tensor(operator.whitened, dtype=torch.float32, device=self.device),
            self.mask, loss=cfg.loss, out_range=self.out_range,
            data_basis=torch.from_numpy(operator.range_basis(RANGE_RTOL)).to(self.device))
        self.objective.phi = lambda: self.execution.phi(self.net, self.input)()
        self.recent: deque[tuple[np.ndarray, np.ndarray]] = deque(maxlen=cfg.window)
        self.curve: deque[tuple[np.ndarray, float]] = deque(maxlen=cfg.tidal_frames)
        self.tidal: np.ndarray | None = None  # the last tidal sample's values
        self.alpha = 1.0  # the last frame's amplitude (1 until a frame is fitted)
        self.frames = self.steps = 0

    @property
    def settings(self) -> dict[str, Any]:
        return {**self.config.settings(), "device": str(self.device),
                "execution": self.execution.name, "start": self.start_source,
                "input_scale": self.input_scale}

    # --- frame path -----------------------------------------------------------------------

    def forward(self, dv: np.ndarray) -> tuple[Tensor, Tensor, Tensor, float]:
        """(preview values (V,), the network's values in its own units after the amplitude
        fit (V,), the served Δσ/σ0 (V,), data term of eq. 14 at the fitted values) of one
        frame, without gradients (module docstring)."""
        cfg = self.config
        with torch.no_grad():
            x = torch.as_tensor(np.asarray(dv, dtype=np.float32), device=self.device)
            preview = self.preview.images(x[None])[0]
            z = network_input(preview[None], self.mask, self.input_scale)
            values = self.out_range.apply(self.execution.phi(self.net, z)())[self.mask]
            data = x * self.data_weights
            if cfg.amplitude_fit:
                alpha, misfit = self.objective.data.amplitude_fit(values, data)
                values = alpha * values
                self.alpha = float(alpha)
            else:
                misfit = self.objective.data(values, data)
            served = torch.expm1(values) if cfg.log_conductivity else values
        return preview, values, served, float(misfit)

    def push(self, dv: np.ndarray) -> FrameResult:
        """The frame's volume, one forward pass; the frame joins the fine-tuning window (with
        its values in the network's units, as the temporal TV of eq. 13 compares them)."""
        def run() -> tuple[np.ndarray, int, float]:
            preview, values, served, misfit = self.forward(dv)
            out = served.cpu().numpy()
            self.recent.append((np.asarray(dv, dtype=np.float32), values.cpu().numpy()))
            # global impedance (clinical sign: rises on inspiration, -sum of the change)
            self.curve.append((np.asarray(dv, dtype=np.float32), -float(preview.sum())))
            self.frames += 1
            return out, 1, misfit

        return self.timed(run)

    # --- fine-tuning ----------------------------------------------------------------------

    def tidal_difference(self) -> np.ndarray | None:
        """Δv at the largest minus Δv at the smallest global impedance of the span, when the
        largest comes later (an inspiration); else None."""
        if len(self.curve) < 2:
            return None
        values = [v for _, v in self.curve]
        hi, lo = int(np.argmax(values)), int(np.argmin(values))
        return self.curve[hi][0] - self.curve[lo][0] if hi > lo else None

    def sample(self) -> tuple[np.ndarray, VolumeWindow, bool] | None:
        """The next step's (Δv, temporal window, is tidal), or None with too few frames."""
        cfg = self.config
        if cfg.tidal_every and self.steps % cfg.tidal_every == cfg.tidal_every - 1:
            tidal = self.tidal_difference()
            if tidal is not None:
                window = self.objective.new_window()
                if self.tidal is not None:
                    window.push(torch.from_numpy(self.tidal))
                return tidal, window, True
        if len(self.recent) < 2:
            return None
        k = 1 + self.steps % (len(self.recent) - 1)  # frames with a predecessor, in turn
        window = self.objective.new_window()
        for _, values in list(self.recent)[max(0, k - cfg.loss.window):k]:
            window.push(torch.from_numpy(values))
        return self.recent[k][0], window, False

    def background_step(self) -> bool:
        """One Adam iteration of eq. (14) on the next sample; False when there is none yet."""
        chosen = self.sample()
        if chosen is None:
            return False
        dv, window, tidal = chosen
        x = torch.from_numpy(dv).to(self.device)
        with torch.no_grad():
            self.input.copy_(network_input(self.preview.images(x[None]), self.mask,
                                           self.input_scale))
        hook = self.execution.hook
        self.optimizer.zero_grad(set_to_none=True)
        with hook.iteration() if hook is not None else contextlib.nullcontext():
            terms = self.objective(x * self.data_weights, window)
            terms.total.backward()
            self.optimizer.step()
        if tidal:
            self.tidal = terms.values.detach().cpu().numpy()
        self.steps += 1
        return True

    # --- state ----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        moments = {n: {k: (float(v) if k == "step" else v.detach().cpu().numpy().copy())
                       for k, v in m.items()} for n, m in self.optimizer.moments().items()}
        return {"format": FORMAT, "method": self.method, "frames": self.frames,
                "steps": self.steps,
                "weights": {n: p.detach().cpu().numpy().copy()
                            for n, p in self.net.named_parameters()},
                "moments": moments,
                "recent": [[dv, values] for dv, values in self.recent],
                "curve": [[dv, value] for dv, value in self.curve],
                "tidal": self.tidal}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("format") != FORMAT or state.get("method") != self.method:
            raise ValueError("d2ip-live state: made by another method or format")
        with torch.no_grad():
            for n, p in self.net.named_parameters():
                p.copy_(torch.from_numpy(np.array(state["weights"][n])))
        self.optimizer = self.execution.optimizer(self.net, self.config.lr)
        if state["moments"]:
            self.optimizer.load_moments({n: {k: torch.as_tensor(np.array(v))
                                             for k, v in m.items()}
                                         for n, m in state["moments"].items()})
        self.recent = deque(((np.array(dv), np.array(v)) for dv, v in state["recent"]),
                            maxlen=self.config.window)
        self.curve = deque(((np.array(dv), float(v)) for dv, v in state["curve"]),
                           maxlen=self.config.tidal_frames)
        self.tidal = None if state["tidal"] is None else np.array(state["tidal"])
        self.frames, self.steps = int(state["frames"]), int(state["steps"])
