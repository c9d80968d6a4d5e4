"""Supervised pretraining of D2IP's network on the pretraining set (seed eq. 2).

theta_s* = argmin (1/N) sum_n ||gamma(phi_theta(A^dagger y_n)) - x_n||^2 over the voxels inside
the mask: phi is D2IP's 3D-FastResUNet (`worker.recon.d2ip.network`), its input the frame's
Tikhonov preview (`network_input`), gamma D2IP's output mapping (eq. 3 of the D2IP seed), x_n
the truth clipped to gamma's range. Adam with a cosine learning rate, one sample per step,
samples in a seeded order; every `eval_every` steps the validation loss (a held-out share of
the set, linearised and nonlinear apart) and the Tikhonov preview's own loss on it. The network
runs on the CPU's fused kernels (`d2ip.cpu`) when they are available, with `threads` kernel
and torch threads (one by default: on a shared 2-core machine two torch threads made a step
ten times slower, 1.1-1.5 s against 0.12 s at load 16).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor
from tqdm import tqdm

from worker.forward.model import ForwardModel
from worker.recon.d2ip.config import OUT_RANGE
from worker.recon.d2ip.cpu import library
from worker.recon.d2ip.cpu.channels_last import ChannelsLastNetwork
from worker.recon.d2ip.cpu.flat_adam import FlatAdam
from worker.recon.d2ip.mapping import OutputRange
from worker.recon.d2ip.network import FastResUNet3D, NetConfig
from worker.recon.educated.data import DataConfig, Dataset, build_dataset

INPUT_GAIN = 10.0  # preview (Delta sigma / sigma_0, ~0.1) times this is the network's input


@dataclass(frozen=True)
class TrainConfig:
    """The pretraining run: data, steps, learning rate (cosine from `lr` to `lr_final`), the
    held-out share, the evaluation interval, the seed (network init and sample order), the
    network and the input gain; `threads`: the fused kernels' threads (not part of the
    weights' identity: results do not depend on it)."""

    data: DataConfig = field(default_factory=DataConfig)
    steps: int = 5000
    lr: float = 1e-3
    lr_final: float = 2e-5
    validation: float = 0.05
    eval_every: int = 250
    seed: int = 0
    net: NetConfig = field(default_factory=NetConfig)
    input_gain: float = INPUT_GAIN

    def __post_init__(self) -> None:
        if self.steps < 1 or not 0 < self.validation < 1 or self.eval_every < 1:
            raise ValueError(f"train: steps >= 1, 0 < validation < 1, eval_every >= 1: {self}")
        if self.net.in_channels != 1:
            raise ValueError("train: the network takes one input channel (the preview)")

    def identity(self) -> dict[str, Any]:
        """What the weights depend on (for `weights.educated_key`)."""
        return asdict(self)


@dataclass
class TrainResult:
    """The trained weights, the loss curves and what was run."""

    state: dict[str, Tensor]
    curve: dict[str, Any]
    meta: dict[str, Any]


def network_input(preview: Tensor, mask: Tensor, gain: float = INPUT_GAIN) -> Tensor:
    """The network's input (1, 1, P, R, C): the preview values (V,) inside `mask` times
    `gain`, zero outside."""
    volume = torch.zeros(mask.shape, dtype=torch.float32)
    volume[mask] = preview.to(torch.float32) * gain
    return volume[None, None]


class Supervised:
    """The supervised loss of one sample for `net` (eq. 2 of the seed), on the fused kernels
    when `fused`."""

    def __init__(self, net: FastResUNet3D, mask: Tensor, fused: bool, gain: float) -> None:
        self.net, self.mask, self.fused, self.gain = net, mask, fused, gain
        self.index = torch.nonzero(mask.reshape(-1)).reshape(-1)
        self.out = OutputRange.symmetric(OUT_RANGE)
        self.limit = OUT_RANGE * 0.999

    def values(self, preview: Tensor) -> Tensor:
        """gamma(phi_theta(preview)) inside the mask (V,)."""
        z = network_input(preview, self.mask, self.gain)
        phi = ChannelsLastNetwork(self.net, z, fused=self.fused)
        return self.out.apply(phi()).reshape(-1)[self.index]

    def loss(self, preview: Tensor, truth: Tensor) -> Tensor:
        target = truth.clamp(-self.limit, self.limit)
        return ((self.values(preview) - target) ** 2).mean()


def _lr(config: TrainConfig, step: int) -> float:
    """Cosine from `lr` at step 0 to `lr_final` at the last step."""
    t = step / max(config.steps - 1, 1)
    return config.lr_final + 0.5 * (config.lr - config.lr_final) * (1 + np.cos(np.pi * t))


def _mean_loss(sup: Supervised, data: Dataset, rows: np.ndarray) -> float | None:
    if rows.size == 0:
        return None
    with torch.no_grad():
        return float(np.mean([float(sup.loss(torch.from_numpy(data.inputs[r]),
                                             torch.from_numpy(data.targets[r])))
                              for r in rows]))


def _preview_loss(sup: Supervised, data: Dataset, rows: np.ndarray) -> float:
    """The loss of the preview itself (clipped) as a reconstruction: the baseline line."""
    lim = sup.limit
    return float(np.mean([np.mean((np.clip(data.inputs[r], -lim, lim)
                                   - np.clip(data.targets[r], -lim, lim)) ** 2) for r in rows]))


def train(model: ForwardModel, config: TrainConfig | None = None, progress: bool = False,
          threads: int | None = 1, dataset: Dataset | None = None) -> TrainResult:
    """Pretrain on `model` (module docstring); `dataset` overrides building `config.data`."""
    cfg = config or TrainConfig()
    t0 = time.perf_counter()
    data = dataset if dataset is not None else build_dataset(model, cfg.data, progress)
    data_seconds = time.perf_counter() - t0
    order_rng = np.random.default_rng([cfg.seed, 17])
    rows = order_rng.permutation(len(data.targets))
    n_val = max(1, int(round(cfg.validation * rows.size)))
    val, fit = rows[:n_val], rows[n_val:]
    val_sets = {"linear": val[~data.nonlinear[val]], "nonlinear": val[data.nonlinear[val]]}
    fused = library.available()
    net = FastResUNet3D(cfg.net, seed=cfg.seed)
    optimizer = FlatAdam(net, cfg.lr)
    sup = Supervised(net, torch.as_tensor(model.mask), fused, cfg.input_gain)
    curve: dict[str, Any] = {"step": [], "train": [], "validation": {k: [] for k in val_sets},
                             "preview": {k: (_preview_loss(sup, data, v) if v.size else None)
                                         for k, v in val_sets.items()}}
    before = (torch.get_num_threads(), library.set_threads(threads) if fused else None)
    if threads is not None:
        torch.set_num_threads(threads)
    running: list[float] = []
    try:
        with tqdm(total=cfg.steps, desc="pretraining", unit="step", disable=not progress,
                  mininterval=2.0) as bar:
            order = np.empty(0, dtype=int)
            for step in range(cfg.steps):
                if order.size == 0:
                    order = order_rng.permutation(fit)
                r, order = int(order[0]), order[1:]
                for group in optimizer.adam.param_groups:
                    group["lr"] = _lr(cfg, step)
                optimizer.zero_grad()
                loss = sup.loss(torch.from_numpy(data.inputs[r]),
                                torch.from_numpy(data.targets[r]))
                loss.backward()
                optimizer.step()
                running.append(float(loss.detach()))
                if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
                    curve["step"].append(step + 1)
                    curve["train"].append(float(np.mean(running)))
                    running = []
                    for k, v in val_sets.items():
                        curve["validation"][k].append(_mean_loss(sup, data, v))
                    bar.set_postfix(val=f"{curve['validation']['linear'][-1]:.3g}")
                bar.update()
    finally:
        torch.set_num_threads(before[0])
        if fused:
            library.set_threads(before[1])
    state = {n: p.detach().clone() for n, p in net.named_parameters()}
    meta = {"date": time.strftime("%Y-%m-%d"), "samples": int(rows.size),
            "validation_samples": int(n_val), "fused": fused, "threads": threads,
            "data_seconds": data_seconds,
            "train_seconds": time.perf_counter() - t0 - data_seconds, "dataset": data.meta,
            "config": cfg.identity()}
    return TrainResult(state, curve, meta)


def write_outputs(result: TrainResult, out_dir: Path) -> dict[str, Path]:
    """weights.pt (state and meta), curve.json and curve.png under `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"weights": out_dir / "weights.pt", "curve": out_dir / "curve.json",
             "plot": out_dir / "curve.png"}
    torch.save({"meta": result.meta, "state": result.state}, paths["weights"])
    paths["curve"].write_text(json.dumps({"meta": result.meta, **result.curve}, indent=2,
                                         default=str))
    plot_curve(result.curve, paths["plot"])
    return paths


def plot_curve(curve: dict[str, Any], path: Path) -> None:
    """Training and validation loss vs step (log scale), the preview's loss as lines."""
    fig = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(curve["step"], curve["train"], label="training (mean since last point)")
    for (k, v), colour in zip(curve["validation"].items(), ("tab:orange", "tab:green"),
                              strict=True):
        if any(x is not None for x in v):
            ax.plot(curve["step"], v, label=f"validation, {k}", color=colour)
        if curve["preview"][k] is not None:
            ax.axhline(curve["preview"][k], ls="--", color=colour,
                       label=f"Tikhonov preview, {k}")
    ax.set_yscale("log")
    ax.set_xlabel("step (one sample each)")
    ax.set_ylabel("mean squared error of Δσ/σ0 inside the mask")
    ax.set_title("Educated DIP pretraining")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
