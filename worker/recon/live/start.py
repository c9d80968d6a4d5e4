"""The starting weights of a `d2ip-live` network: `initial_state`, the one seam to the
educated weights (issue 17 §1).

The start is Educated DIP's weights (`worker.recon.educated`) when they are shipped or cached
for this model (never trained here: that takes tens of minutes); else D2IP's stored UPWS warm
start (eq. 6-7) when the store holds one for the default configuration; else the Kaiming
initialisation. From there it is fitted supervised for `LiveConfig.pretrain_steps` Adam steps
to map the Tikhonov preview of simulated frames (`frames.training_frames`) to their truth
(Educated DIP's first stage, seed 3, in miniature), which also adapts the educated weights to
this method's input scale and output range; UPWS weights map a fixed noise input to one
volume, not a preview to a volume. The result is cached per model and setting under
`<cache dir>/d2ip-live/`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm import tqdm

from worker.recon.d2ip.config import D2IPConfig
from worker.recon.d2ip.execution import Execution
from worker.recon.d2ip.mapping import OutputRange
from worker.recon.d2ip.network import FastResUNet3D
from worker.recon.d2ip.warm_start import WarmStartStore, warm_start_key
from worker.recon.educated.weights import stored_educated_state
from worker.recon.live.config import LiveConfig
from worker.recon.live.frames import training_frames
from worker.storage import cache_dir, cached_arrays, content_key

if TYPE_CHECKING:
    from worker.forward.model import ForwardModel

FOLDER = "d2ip-live"
FORMAT = 1

Preview = Callable[[torch.Tensor], torch.Tensor]  # normalised frames (T, M) -> previews (T, V)


@dataclass(frozen=True)
class StartState:
    """Network weights by parameter name and the preview's input scale."""

    weights: dict[str, np.ndarray]
    input_scale: float
    source: str  # "educated", "upws" or "kaiming": where the supervised fit began


def network_input(previews: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
    """(T, V) preview values -> (T, 1, P, R, C) network inputs, zero outside the mask."""
    out = previews.new_zeros((previews.shape[0], 1, *mask.shape))
    out[:, 0, mask] = previews * scale
    return out


def initial_state(model: ForwardModel, config: LiveConfig, preview: Preview,
                  execution: Execution, out_range: OutputRange) -> StartState:
    """The network's starting weights for this model (cached, else fitted now)."""
    d2ip = D2IPConfig()
    educated = stored_educated_state(model)
    upws = None if educated is not None else WarmStartStore(warm_start_key(model.spec, d2ip)).read()
    source = "educated" if educated is not None else "upws" if upws is not None else "kaiming"
    key = content_key({"format": FORMAT, "model": model.spec, "start": config.start_settings(),
                       "source": source, "out_range": [out_range.lo, out_range.hi]})

    def build() -> dict[str, np.ndarray]:
        net = FastResUNet3D(d2ip.net, seed=config.seed)
        if educated is not None:
            net.load_state_dict(educated, strict=False)
        elif upws is not None:
            net.load_state_dict({n: torch.from_numpy(np.array(w))
                                 for n, w in upws.weights.items()}, strict=False)
        scale = supervised_fit(net, model, config, preview, execution, out_range)
        return {"input_scale": np.array(scale),
                **{f"w:{n}": p.detach().numpy().copy() for n, p in net.named_parameters()}}

    arrays = cached_arrays(cache_dir() / FOLDER / f"start-{key}.npz", build)
    return StartState(weights={k[2:]: v for k, v in arrays.items() if k.startswith("w:")},
                      input_scale=float(arrays["input_scale"]), source=source)


def supervised_fit(net: FastResUNet3D, model: ForwardModel, config: LiveConfig,
                   preview: Preview, execution: Execution, out_range: OutputRange
                   ) -> float:
    """Adam on the mean squared error of gamma(phi(preview)) against the truth (eq. 3), one
    simulated frame per step in turn; returns the input scale (1 / s.d. of the previews)."""
    data = training_frames(model, config.pretrain_frames, config.seed)
    mask = torch.as_tensor(model.mask)
    with torch.no_grad():
        previews = preview(torch.from_numpy(data.dv))
    scale = float(1.0 / previews.std())
    inputs = network_input(previews, mask, scale)
    truths = torch.from_numpy(data.truth)
    optimizer = execution.optimizer(net, config.pretrain_lr)
    for step in tqdm(range(config.pretrain_steps), desc="d2ip-live start", unit="step",
                     mininterval=5.0):
        k = step % len(truths)
        optimizer.zero_grad(set_to_none=True)
        values = out_range.apply(execution.phi(net, inputs[k:k + 1])())[mask]
        torch.mean((values - truths[k]) ** 2).backward()
        optimizer.step()
    return scale
