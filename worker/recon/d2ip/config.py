"""`D2IPConfig`: everything that defines a D2IP reconstructor, frozen and validated.

The API and the command line pass plain options (`get_method(name)(model, **options)`);
`D2IPConfig.from_options` turns them into this object, with a clear `ValueError` for a bad value
and a `TypeError` for an unknown name. The stopping and lambda rules are objects
(`optimise.FixedSchedule` / `AdaptiveSchedule`, `lambda_rule.FixedLambda` / `DataScaledRule`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from worker.recon.d2ip.lambda_rule import KAPPA, DataScaledRule, FixedLambda, LambdaRule
from worker.recon.d2ip.mapping import DataRange, OutputRange, RangeRule
from worker.recon.d2ip.network import NetConfig
from worker.recon.d2ip.objective import LossConfig
from worker.recon.d2ip.optimise import (
    FIRST_FRAME_ITERATIONS,
    LATER_FRAME_ITERATIONS,
    LR_SIMULATED,
    UPWS_ITERATIONS,
    AdaptiveSchedule,
    AdaptiveStop,
    FixedSchedule,
    Schedule,
)

OUT_RANGE = 0.75  # a of gamma = [-a, a] (eq. 3)
Data = Literal["simulated", "real"]


@dataclass(frozen=True)
class Iterations:
    """Adam iterations of a frame by where it starts (paper IV.D: 1800:450:250)."""

    cold: int = UPWS_ITERATIONS.n  # Kaiming initialisation: UPWS (eq. 6), every frame of `dip`
    warm: int = FIRST_FRAME_ITERATIONS.n  # from the warm start (eq. 7)
    propagated: int = LATER_FRAME_ITERATIONS.n  # from the previous frame (TPP, eq. 9)

    def __post_init__(self) -> None:
        if min(self.cold, self.warm, self.propagated) < 1:
            raise ValueError(f"iterations: must be positive, got {self}")


REAL_ITERATIONS = Iterations(cold=FIRST_FRAME_ITERATIONS.n)  # the first frame, from Kaiming
REAL_LR = LR_SIMULATED  # chosen on the real files (docs/d2ip-results.md); the paper's: LR_REAL


@dataclass(frozen=True)
class D2IPConfig:
    """A D2IP reconstructor's configuration (docs/d2ip.md, "Options").

    `upws`, `tpp`: the two strategies (eq. 6-7, eq. 9); `data` picks the learning rate when
    `lr` is None (paper IV.D); `schedule` stops each frame within its count by where it starts
    (`iterations`); `seed` draws Z and the Kaiming weights; `net`, `loss` (eq. 14), `lam_rule`
    (the frame's lambda_TV), `out_range` (gamma, eq. 3), `whiten` (the data term's weights);
    `warm_start_dir`: the warm-start store (None: under the cache dir).
    """

    variant: str = "d2ip"
    upws: bool = True
    tpp: bool = True
    data: Data = "simulated"
    lr: float | None = None
    schedule: Schedule = field(default_factory=FixedSchedule)
    iterations: Iterations = field(default_factory=Iterations)
    seed: int = 0
    net: NetConfig = field(default_factory=NetConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    lam_rule: LambdaRule = field(default_factory=FixedLambda)
    out_range: RangeRule = field(default_factory=lambda: OutputRange.symmetric(OUT_RANGE))
    whiten: bool = True
    warm_start_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.data not in ("simulated", "real"):
            raise ValueError(f"data: expected 'simulated' or 'real', got {self.data!r}")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr: must be positive, got {self.lr}")
        for name, kind in (("schedule", (FixedSchedule, AdaptiveSchedule)),
                           ("iterations", Iterations), ("net", NetConfig),
                           ("loss", LossConfig), ("lam_rule", (FixedLambda, DataScaledRule)),
                           ("out_range", (OutputRange, DataRange))):
            if not isinstance(getattr(self, name), kind):
                raise ValueError(f"{name}: got {getattr(self, name)!r}")

    @property
    def learning_rate(self) -> float:
        """`lr`, else by `data`: 5e-4 simulated (paper IV.D), `REAL_LR` real (the paper's
        1e-4, `LR_REAL`, left a warm start in place: docs/d2ip.md)."""
        if self.lr is not None:
            return self.lr
        return LR_SIMULATED if self.data == "simulated" else REAL_LR

    def settings(self) -> dict[str, Any]:
        """A JSON-able summary (the reconstructor's `settings`)."""
        return {"variant": self.variant, "upws": self.upws, "tpp": self.tpp,
                "lr": self.learning_rate, "data": self.data, **self.schedule.settings(),
                "iterations": asdict(self.iterations), "seed": self.seed,
                "net": asdict(self.net), "loss": asdict(self.loss),
                "lam_rule": self.lam_rule.name, **self.lam_rule.settings(),
                "out_range": self.out_range.settings(), "whiten": self.whiten}

    @classmethod
    def from_options(cls, variant: str = "d2ip", *, schedule: str | Schedule = "paper",
                     min_iterations: int = AdaptiveSchedule.min_iterations,
                     adaptive_tol: float = AdaptiveStop.tol,
                     iterations: Iterations | tuple[int, int, int] | list[int] | None = None,
                     net: NetConfig | Mapping[str, Any] | None = None,
                     lam: float = LossConfig.lam, lam_s: float = LossConfig.lam_s,
                     lam_t: float = LossConfig.lam_t, window: int = LossConfig.window,
                     lam_rule: str | LambdaRule = "fixed", kappa: float = KAPPA,
                     out_range: float | str | RangeRule | None = None,
                     range_margin: float = DataRange.margin,
                     warm_start_dir: str | Path | None = None,
                     **options: Any) -> D2IPConfig:
        """The configuration from API options: `schedule` "paper" (fixed counts) or "adaptive"
        (with `min_iterations`, `adaptive_tol`); `iterations` (cold, warm, propagated); `net`
        (`NetConfig` fields); `lam`, `lam_s`, `lam_t`, `window` (`LossConfig`); `lam_rule`
        "fixed" or "data" (with `kappa`); `out_range` a of [-a, a], or "data" (`DataRange`
        with `range_margin`), default by `data`; the other options are
        fields of this class (`upws`, `tpp`, `data`, `lr`, `seed`, `whiten`).

        `data="real"` changes the defaults of the options not given: no UPWS (the first frame
        starts from the zero-tail initialisation, the "no change" image, so no warm start is
        made or needed for a new protocol), `REAL_ITERATIONS` and the data range;
        `data="simulated"` keeps the paper's defaults and a = 0.75."""
        unknown = sorted(set(options) - {f.name for f in fields(cls)})
        if unknown:
            raise TypeError(f"{variant}: unknown option(s) {', '.join(unknown)}")
        if schedule == "paper":
            schedule = FixedSchedule()
        elif schedule == "adaptive":
            schedule = AdaptiveSchedule(int(min_iterations), float(adaptive_tol))
        elif not isinstance(schedule, (FixedSchedule, AdaptiveSchedule)):
            raise ValueError(f"schedule: expected 'paper' or 'adaptive', got {schedule!r}")
        if lam_rule == "fixed":
            lam_rule = FixedLambda()
        elif lam_rule == "data":
            lam_rule = DataScaledRule(float(kappa))
        elif not isinstance(lam_rule, (FixedLambda, DataScaledRule)):
            raise ValueError(f"lam_rule: expected 'fixed' or 'data', got {lam_rule!r}")
        data = options.get("data", "simulated")
        if data == "real":  # real-data defaults under the options given (docs/d2ip.md)
            options = {"upws": False, **options}
            iterations = REAL_ITERATIONS if iterations is None else iterations
        if out_range is None:
            out_range = OutputRange.symmetric(OUT_RANGE) if data == "simulated" else "data"
        if out_range == "data":
            out_range = DataRange(float(range_margin))
        elif not isinstance(out_range, (OutputRange, DataRange)):
            out_range = OutputRange.symmetric(float(out_range))
        for flag in ("upws", "tpp", "whiten"):
            if flag in options:
                options[flag] = bool(options[flag])
        for number, kind in (("seed", int), ("lr", float)):
            if options.get(number) is not None:
                options[number] = kind(options[number])
        return cls(variant=variant, schedule=schedule, iterations=_iterations(iterations),
                   net=_net(net), loss=LossConfig(lam=float(lam), lam_s=float(lam_s),
                                                  lam_t=float(lam_t), window=int(window)),
                   lam_rule=lam_rule, out_range=out_range,
                   warm_start_dir=None if warm_start_dir is None else Path(warm_start_dir),
                   **options)


def _iterations(value: Iterations | tuple[int, int, int] | list[int] | None) -> Iterations:
    if value is None:
        return Iterations()
    if isinstance(value, Iterations):
        return value
    if len(value) != 3:
        raise ValueError(f"iterations: expected (cold, warm, propagated), got {value!r}")
    return Iterations(*(int(n) for n in value))


def _net(value: NetConfig | Mapping[str, Any] | None) -> NetConfig:
    if value is None:
        return NetConfig()
    if isinstance(value, NetConfig):
        return value
    options = dict(value)
    for name in ("widths", "aspp_dilations"):
        if name in options:
            options[name] = tuple(options[name])
    return NetConfig(**options)
