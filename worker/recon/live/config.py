"""`LiveConfig`: what defines a `d2ip-live` reconstructor (docs/d2ip-live.md, "Options")."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from worker.recon.d2ip.objective import LossConfig
from worker.recon.d2ip.optimise import LR_SIMULATED


@dataclass(frozen=True)
class LiveConfig:
    """Fine-tuning: Adam at `lr` on D2IP's eq. (14) with `loss`, over the last `window`
    frames, every `tidal_every`-th step (0: never) on the tidal difference of the last
    `tidal_frames` frames. Start: `pretrain_steps` supervised Adam steps at `pretrain_lr` on
    `pretrain_frames` simulated frames (`frames.training_frames`), from `seed`. Frame path:
    with `amplitude_fit` the network's values x are scaled by their least-squares amplitude
    against the frame's data; with `log_conductivity` they are read as ln(σ/σ0) and served as
    Δσ/σ0 = exp(x) - 1 (docs/d2ip-live.md, "Amplitude")."""

    lr: float = LR_SIMULATED / 5
    window: int = 40
    tidal_every: int = 4
    tidal_frames: int = 120
    loss: LossConfig = field(default_factory=LossConfig)
    pretrain_frames: int = 192
    pretrain_steps: int = 800
    pretrain_lr: float = 1e-3
    seed: int = 0
    amplitude_fit: bool = True
    log_conductivity: bool = True

    def __post_init__(self) -> None:
        if not (self.lr > 0 and self.pretrain_lr > 0):
            raise ValueError(f"lr, pretrain_lr: must be positive, got {self.lr}, "
                             f"{self.pretrain_lr}")
        if self.window < 2 or self.tidal_every < 0 or self.tidal_frames < 2:
            raise ValueError("window and tidal_frames must be at least 2, tidal_every >= 0")
        if self.pretrain_frames < 1 or self.pretrain_steps < 0:
            raise ValueError("pretrain_frames must be positive, pretrain_steps >= 0")

    def start_settings(self) -> dict[str, Any]:
        """What the starting weights depend on (their cache key)."""
        return {"frames": self.pretrain_frames, "steps": self.pretrain_steps,
                "lr": self.pretrain_lr, "seed": self.seed}

    def settings(self) -> dict[str, Any]:
        return {"lr": self.lr, "window": self.window, "tidal_every": self.tidal_every,
                "tidal_frames": self.tidal_frames, "loss": asdict(self.loss),
                "amplitude_fit": self.amplitude_fit, "log_conductivity": self.log_conductivity,
                "start": self.start_settings()}
