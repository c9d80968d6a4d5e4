"""Registers `edip` (Educated DIP, `reconstructor.EducatedDIP`) with the reconstruction registry.

Options: D2IP's (`D2IPConfig.from_options`; `upws` and `net` are fixed by the method; `tpp`
False starts every frame from the educated weights), and `pretrain_steps`, `pretrain_samples`,
`pretrain_fem_samples`, `pretrain_seed` for educated weights other than the shipped ones
(pretrained on first use and cached, `weights.educated_state`).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from worker.recon.base import register
from worker.recon.d2ip.config import D2IPConfig, Iterations
from worker.recon.d2ip.cpu import execution_for
from worker.recon.d2ip.reconstructor import resolve_device
from worker.recon.educated.reconstructor import EducatedDIP
from worker.recon.educated.train import TrainConfig
from worker.recon.educated.weights import default_config

if TYPE_CHECKING:
    from worker.forward.model import ForwardModel

FIXED = ("upws", "net")
# On breaths' tidal differences (the `breath` policy): every breath from the educated weights,
# TIDAL_ITERATIONS Adam steps of D2IP's objective (4D-TV window carried from breath to breath).
# Chosen on a tidal-breathing recording held out of the benchmark (seed 1), docs/ventilation.md
# "Breath-synchronous D2IP": fine-tuning longer, or carrying the weights (TPP), drifts from the
# pretrained network towards D2IP's own solution and loses MSSIM.
TIDAL_ITERATIONS = 25
TIDAL_OPTIONS: dict[str, Any] = {
    "tpp": False, "iterations": (Iterations().cold, TIDAL_ITERATIONS, TIDAL_ITERATIONS)}


def pretraining_config(steps: int | None = None, samples: int | None = None,
                       fem_samples: int | None = None, seed: int | None = None) -> TrainConfig:
    """The default pretraining with the given steps, samples (linearised, nonlinear) and seed
    (of the data, the initialisation and the order); None keeps the default."""
    base = default_config()
    given = {"samples": samples, "fem_samples": fem_samples, "seed": seed}
    data = dataclasses.replace(base.data, **{k: int(v) for k, v in given.items()
                                             if v is not None})
    train = {"steps": steps, "seed": seed}
    return dataclasses.replace(base, data=data, **{k: int(v) for k, v in train.items()
                                                   if v is not None})


@register("edip", tidal=TIDAL_OPTIONS)
def edip(model: ForwardModel, device: str = "auto", pretrain_steps: int | None = None,
         pretrain_samples: int | None = None, pretrain_fem_samples: int | None = None,
         pretrain_seed: int | None = None, **options: Any) -> EducatedDIP:
    """Educated DIP: D2IP fine-tuned from pretrained weights, the frame's preview as input."""
    if fixed := sorted(set(options) & set(FIXED)):
        raise TypeError(f"edip: {', '.join(fixed)} fixed by the method")
    pretraining = pretraining_config(pretrain_steps, pretrain_samples, pretrain_fem_samples,
                                     pretrain_seed)
    tpp = bool(options.pop("tpp", True))
    config = D2IPConfig.from_options("edip", net=pretraining.net, upws=True, tpp=tpp,
                                     **options)
    dev = resolve_device(device)
    return EducatedDIP(model, config, dev, execution_for(dev), pretraining)
