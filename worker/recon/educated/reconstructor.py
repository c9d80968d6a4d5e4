"""Educated DIP (`edip`): D2IP fine-tuned from pretrained weights, the preview as input.

The seed's second stage on our dynamic problem: every frame minimises D2IP's objective (eq. 14
of the D2IP seed: data term + lambda_TV 4D-TV, eq. 11) over theta of phi_theta(A^dagger y_i),
whose input is the frame's own Tikhonov preview A^dagger y_i = R Delta v_i
(`train.network_input`, the same R and gain as in pretraining) instead of D2IP's fixed noise Z.

- The first frame starts from the educated weights theta_s* (`weights.educated_state`) with a
  fresh Adam: they replace UPWS (no 1800-iteration warm start);
- later frames start where the previous one ended, weights and Adam moments (TPP, eq. 9);
  with `tpp=False` every frame starts from the educated weights again (the seed's own use:
  fine-tune the pretrained network on each measurement), as `edip` does on breaths' tidal
  differences (`method.TIDAL_OPTIONS`);
- iterations: `Iterations.warm` (450) on the first frame, `propagated` (250) later (the paper's
  schedule), or the adaptive schedule; the D2IP options all apply (`D2IPConfig`).

Everything else (objective, optimiser, execution strategy, state) is D2IP's
(`d2ip.reconstructor.D2IP`); the state's key also names the educated weights.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from worker.recon.d2ip.config import D2IPConfig
from worker.recon.d2ip.execution import Execution
from worker.recon.d2ip.optimise import FrameResult as CoreResult
from worker.recon.d2ip.optimise import StopRule
from worker.recon.d2ip.prior import VolumeWindow
from worker.recon.d2ip.reconstructor import D2IP, Start
from worker.recon.d2ip.warm_start import Snapshot
from worker.recon.educated.train import TrainConfig, network_input
from worker.recon.educated.weights import default_config, educated_key, educated_state
from worker.recon.tikhonov import tikhonov_operator
from worker.storage import content_key

if TYPE_CHECKING:
    from worker.forward.model import ForwardModel


class EducatedDIP(D2IP):
    """`edip` of `config` (D2IP's options; its `net` must be the pretraining's) with the
    weights of `pretraining` (default `weights.default_config()`)."""

    method = "edip"

    def __init__(self, model: ForwardModel, config: D2IPConfig | None = None,
                 device: str | torch.device = "cpu", execution: Execution | None = None,
                 pretraining: TrainConfig | None = None) -> None:
        self.pretraining = pretraining or default_config()
        config = config or D2IPConfig(variant="edip", net=self.pretraining.net)
        if config.net != self.pretraining.net or not config.upws:
            raise ValueError("edip: the network must be the pretraining's, with the educated "
                             "start (upws)")
        super().__init__(model, config, device, execution)
        self.educated_key = educated_key(model.spec, self.pretraining)
        self.key = content_key({"d2ip": self.key, "educated": self.educated_key})
        self.preview_matrix = torch.from_numpy(tikhonov_operator(model).matrix).to(self.device)
        self.mask = torch.as_tensor(model.mask)
        self.educated: Snapshot | None = None  # loaded at the first restart

    @property
    def settings(self) -> dict[str, Any]:
        return {**super().settings, "educated": {"key": self.educated_key,
                                                 "steps": self.pretraining.steps,
                                                 "input_gain": self.pretraining.input_gain}}

    def preview(self, dv: np.ndarray) -> Tensor:
        """The frame's Tikhonov preview R Delta v inside the mask (V,)."""
        values = torch.as_tensor(np.asarray(dv, dtype=np.float32), device=self.device)
        return self.preview_matrix @ values

    def feed(self, dv: np.ndarray) -> None:
        """Make the frame's preview the network's input (the objective's phi and Z)."""
        z = network_input(self.preview(dv).cpu(), self.mask,
                          self.pretraining.input_gain).to(self.device)
        self.objective.z = z
        self.objective.phi = self.execution.phi(self.net, z)

    def pretrained(self, dv: np.ndarray) -> Tensor:
        """gamma(phi_{theta_s*}(preview)) inside the mask: the pretrained network alone, one
        forward pass. It loads the educated weights and a fresh Adam into this object, so a
        streaming session's TPP state is lost: call it on an object of its own."""
        self.load_snapshot(self.educated_snapshot())
        self.feed(dv)
        with torch.no_grad():
            return self.objective(self.measurements(dv)).values

    def educated_snapshot(self) -> Snapshot:
        if self.educated is None:
            state = educated_state(self.model, self.pretraining)
            self.educated = Snapshot(weights={n: v.numpy() for n, v in state.items()},
                                     moments={})
        return self.educated

    def restart(self, dv: np.ndarray) -> Start:
        """The first frame's start: the educated weights and a fresh Adam (in place of UPWS)."""
        self.load_snapshot(self.educated_snapshot())
        return "warm"

    def _optimise(self, dv: np.ndarray, window: VolumeWindow | None,
                  stop: StopRule) -> CoreResult:
        self.feed(dv)
        return super()._optimise(dv, window, stop)
