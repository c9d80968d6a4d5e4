"""UPWS (eq. 6-7): starting points theta^(0), and the store of warm starts on disk.

A `Snapshot` is a starting point: network weights and Adam moments by parameter name (numpy
arrays). The warm start theta_0^(N0) of eq. (6) is stored once per configuration under
`<cache dir>/d2ip-warmstart/<key>.pt` (`WarmStartStore`; `worker.storage.write_atomic`), and
loaded by every later session with the same configuration. `warm_start_key` lists what the key
(`worker.storage.content_key`) hashes: what the UPWS weights depend on (the variant does not:
`d2ip` and `d2ip-no-tpp` share a warm start).
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from worker.storage import cache_dir, content_key, write_atomic

if TYPE_CHECKING:
    from worker.recon.d2ip.config import D2IPConfig

WARM_START_FOLDER = "d2ip-warmstart"
FORMAT = 1  # of the warm-start files and the state; part of the key
Moments = dict[str, dict[str, np.ndarray]]


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


def warm_start_key(model_spec: Mapping[str, Any], config: D2IPConfig) -> str:
    """sha256 over the model spec, net config, seed, loss config (and the lambda rule with its
    kappa when it is "data"), output range, whitening, learning rate, UPWS iteration count and
    `FORMAT`: what the UPWS weights depend on."""
    rule = config.lam_rule
    return content_key({"format": FORMAT, "model": model_spec, "net": asdict(config.net),
                        "seed": config.seed, "loss": asdict(config.loss),
                        **({"lam_rule": rule.name, **rule.settings()}
                           if rule.name != "fixed" else {}),
                        "out_range": config.out_range.settings(),
                        "whiten": config.whiten, "lr": config.learning_rate,
                        "iterations": config.iterations.cold})


class WarmStartStore:
    """The warm start of one configuration (`key`) in `folder` (default
    `<cache dir>/d2ip-warmstart`)."""

    def __init__(self, key: str, folder: Path | None = None) -> None:
        self.key = key
        self.folder = folder if folder is not None else cache_dir() / WARM_START_FOLDER

    @property
    def path(self) -> Path:
        return self.folder / f"{self.key}.pt"

    def read(self) -> Snapshot | None:
        """The stored warm start, or None when absent, unreadable or of another key."""
        try:
            stored = torch.load(self.path, map_location="cpu", weights_only=True)
            if stored["meta"]["key"] != self.key:
                return None
            return Snapshot.from_state(_arrays(stored))
        except (OSError, RuntimeError, KeyError, ValueError, EOFError, pickle.UnpicklingError):
            return None

    def write(self, snapshot: Snapshot, meta: dict[str, Any]) -> None:
        """Store `snapshot` with `meta` (plain numbers) atomically (`storage.write_atomic`)."""
        state = {"meta": {"format": FORMAT, "key": self.key, **meta},
                 **_tensors(snapshot.as_state())}
        write_atomic(self.path, lambda temporary: torch.save(state, temporary))


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
