"""Per-recording data weights: exclude bad electrodes, weight channels by their measured noise.

Every method fits the whitened misfit ‖W^½(Δv - J x)‖² through the model's shared operator
(`worker.forward.operator`). A `DataWeighting` turns a recording (or a session's frames so far)
into other weights w on that operator and returns the model variant every method then takes
unchanged, `get_method(name)(weighted_model(model, ...), **options)`:

- `exclude`: electrodes (0-based) whose channels, every one that drives or measures with them,
  get weight 0 (`operator.excluded_weights`): a lost contact is not reconstructed through;
- `noise="data"`: w_i = d_i / σ_i with σ_i each channel's noise estimated from the frames
  (`worker.devices.quality.channel_noise`, the quality report's estimate) and d_i the data
  normalisation's divisor (`operator.noise_weights`), instead of the model's default
  w_i = max(|v0_i|, floor) / rms(v0), which assumes one noise level on every channel.

D2IP (or any other method) reads the weights the same way: `model.operator.weights`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from worker.devices.quality import channel_noise
from worker.forward.operator import channels_using, excluded_weights, noise_weights

if TYPE_CHECKING:
    from worker.forward.model import ForwardModel

NoiseWeighting = Literal["model", "data"]
NOISE_WEIGHTINGS: tuple[NoiseWeighting, ...] = ("model", "data")


@dataclass(frozen=True)
class DataWeighting:
    """What to change in the operator's data weights (the default changes nothing)."""

    exclude: tuple[int, ...] = ()  # electrodes, 0-based
    noise: NoiseWeighting = "model"

    @property
    def is_default(self) -> bool:
        return not self.exclude and self.noise == "model"

    def to_dict(self) -> dict[str, Any]:
        """For a reconstruction's meta (electrodes 1-based, as the quality report prints them)."""
        return {"exclude_electrodes": [e + 1 for e in self.exclude], "noise": self.noise}


def parse_electrodes(text: str, n_electrodes: int) -> tuple[int, ...]:
    """'3,7' (1-based, as printed by the quality report) -> (2, 6); '' -> ()."""
    electrodes = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        if not item.isdigit() or not 1 <= int(item) <= n_electrodes:
            raise ValueError(f"electrode {item!r}: expected a number from 1 to {n_electrodes}")
        electrodes.append(int(item) - 1)
    return tuple(sorted(set(electrodes)))


def weights_for(model: ForwardModel, weighting: DataWeighting,
                voltages: np.ndarray | None = None, reference: np.ndarray | None = None
                ) -> np.ndarray:
    """The (M,) data weights of `weighting` on `model`; `noise="data"` needs the frames
    (T x M, three at least) and the reference they are normalised by."""
    if weighting.noise not in NOISE_WEIGHTINGS:
        raise ValueError(f"noise: expected one of {', '.join(NOISE_WEIGHTINGS)}, "
                         f"got {weighting.noise!r}")
    weights = model.operator.weights
    if weighting.noise == "data":
        if voltages is None or reference is None or len(voltages) < 3:
            raise ValueError("noise=data: needs three frames at least and the reference")
        weights = noise_weights(reference, channel_noise(np.asarray(voltages, dtype=float)))
    if weighting.exclude:
        if max(weighting.exclude) >= model.geometry.electrodes.count:
            raise ValueError(f"exclude: the model has {model.geometry.electrodes.count} "
                             f"electrodes, got electrode {max(weighting.exclude) + 1}")
        protocol = model.protocol
        weights = excluded_weights(weights, channels_using(
            protocol.currents, protocol.meas_injection, protocol.meas_weights,
            weighting.exclude))
    return weights


def weighted_model(model: ForwardModel, weighting: DataWeighting,
                   voltages: np.ndarray | None = None, reference: np.ndarray | None = None
                   ) -> ForwardModel:
    """`model` itself for the default weighting, else its variant with `weights_for`."""
    if weighting.is_default:
        return model
    return model.with_weights(weights_for(model, weighting, voltages, reference))
