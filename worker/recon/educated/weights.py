"""The educated weights theta_s* of a model and pretraining configuration: shipped, cached, or
trained on demand.

`educated_state(model, config)` is the one entry point (the `edip` reconstructor and
`d2ip-live` use it): the weights of `config` (default `default_config()`) for `model`, looked
up by `educated_key` (sha256 of the model spec, the configuration and `FORMAT`) first among the
weights that ship with the package (`shipped/<key>.pt`: the default configuration on the
default model), then in `<cache dir>/edip-weights/<key>.pt`; else pretrained now
(`train.train`, minutes) and stored in the cache (`worker.storage.write_atomic`), as D2IP's
warm starts are (`d2ip.warm_start`).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from worker.forward.model import ForwardModel
from worker.recon.educated.train import TrainConfig, TrainResult, train
from worker.storage import cache_dir, content_key, write_atomic

FORMAT = 1
SHIPPED = Path(__file__).parent / "shipped"
CACHE_FOLDER = "edip-weights"


def default_config() -> TrainConfig:
    """The configuration whose weights ship with the package."""
    return TrainConfig()


def educated_key(model_spec: dict[str, Any], config: TrainConfig) -> str:
    """sha256 over the model spec, the pretraining configuration and `FORMAT`."""
    return content_key({"format": FORMAT, "model": model_spec, "train": config.identity()})


def _read(path: Path, key: str) -> dict[str, Tensor] | None:
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True)
        if stored["meta"]["key"] != key:
            return None
        return {k: v.clone() for k, v in stored["state"].items()}
    except (OSError, RuntimeError, KeyError, ValueError, EOFError, pickle.UnpicklingError):
        return None


def store_weights(model: ForwardModel, config: TrainConfig, result: TrainResult,
                  folder: Path | None = None) -> Path:
    """Write `result`'s weights as those of `config` for `model` (default: the cache)."""
    key = educated_key(model.spec, config)
    path = (folder if folder is not None else cache_dir() / CACHE_FOLDER) / f"{key}.pt"
    meta: dict[str, Any] = {"key": key, "format": FORMAT, "date": result.meta["date"],
                            "steps": config.steps,
                            "final_validation": result.curve["validation"]["linear"][-1]}
    state = {"meta": meta, "state": result.state}
    write_atomic(path, lambda temporary: torch.save(state, temporary))
    return path


def stored_educated_state(model: ForwardModel, config: TrainConfig | None = None
                          ) -> dict[str, Tensor] | None:
    """The educated weights for `model` if they are shipped or cached, else None (no
    training)."""
    cfg = config or default_config()
    key = educated_key(model.spec, cfg)
    for folder in (SHIPPED, cache_dir() / CACHE_FOLDER):
        state = _read(folder / f"{key}.pt", key)
        if state is not None:
            return state
    return None


def educated_state(model: ForwardModel, config: TrainConfig | None = None,
                   progress: bool = False) -> dict[str, Tensor]:
    """The educated weights (state dict of `FastResUNet3D` with `config.net`) for `model`:
    shipped, cached, or pretrained now and cached (module docstring)."""
    cfg = config or default_config()
    state = stored_educated_state(model, cfg)
    if state is not None:
        return state
    result = train(model, cfg, progress=progress)
    store_weights(model, cfg, result)
    return result.state
