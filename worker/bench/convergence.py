"""Convergence of the D2IP variants on one frame (paper V.A.1, Fig. 5b): data loss vs iteration.

Every variant (`worker.recon.d2ip.variants`: `dip`, `d2ip-no-upws`, `d2ip-no-tpp`, `d2ip`) is
brought to the start of the target frame (default frame 2 of `healthy-deep-breath`) the way a
session would get there, then runs the same number of Adam iterations on it:

- UPWS variants get their warm start from a UPWS run (eq. 6) on `upws_frame` (default the last
  frame: an arbitrary frame of the same protocol, not the target's neighbour), computed once in
  this run and shared (a fresh warm-start folder under the output folder);
- the frames before the target are reconstructed with the variant's own schedule, so TPP
  variants start from theta_{i-1}^(N) (eq. 9) and every variant has the same temporal window;
- on the target frame each variant records the data loss (the data term of eq. 14) at
  theta^(0..N).

A fifth curve, `dip+4D-TV`, is cold DIP with the 4D-TV prior (Fig. 5b's red curve): the same
objective as D2IP, so its final data loss is a target that D2IP's prior does not bias against.

Reported: the curves (JSON and a PNG) and three targets: cold DIP's final data loss (`cold`),
`dip+4D-TV`'s (`same_loss`) and the data loss of the true image (`truth`, the discrepancy
level: below it a reconstruction fits noise and model error). For each variant, the
iterations k after which its data loss at theta^(k) first reaches each target; and the ratio of
the full D2IP's count to the cold curve's (`dip`; `dip+4D-TV` for `same_loss`).
Iterations spent before the target frame (UPWS, earlier frames, as a session without a stored
warm start would spend them) are reported beside them, not counted in k (as in Fig. 5b).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from worker.bench.quality import Setup, model_of, recording_for
from worker.bench.speed import torch_threads
from worker.forward.model import ForwardModel
from worker.recon.base import create, normalise
from worker.recon.d2ip.objective import LossConfig
from worker.recon.d2ip.optimise import FixedIterations
from worker.recon.d2ip.reconstructor import D2IP

# (label, registered method, options): the four variants and, as in Fig. 5b's red curve, cold
# DIP with 4D-TV (the same objective as D2IP, without UPWS and TPP)
CURVES: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("dip", "dip", {}),
    ("dip+4D-TV", "dip", {"lam": LossConfig.lam}),
    ("d2ip-no-upws", "d2ip-no-upws", {}),
    ("d2ip-no-tpp", "d2ip-no-tpp", {}),
    ("d2ip", "d2ip", {}),
)
VARIANTS = tuple(label for label, _, _ in CURVES)
BASELINE, SAME_LOSS, FULL = "dip", "dip+4D-TV", "d2ip"
# target -> (description, the cold curve D2IP is compared with)
TARGETS = {"cold": ("cold DIP's final data loss", BASELINE),
           "same_loss": ("dip+4D-TV's final data loss", SAME_LOSS),
           "truth": ("the true image's data loss (discrepancy level)", BASELINE)}
COLOURS = {"dip": "tab:blue", "dip+4D-TV": "tab:red", "d2ip-no-upws": "tab:green",
           "d2ip-no-tpp": "tab:olive", "d2ip": "tab:purple"}


@dataclass(frozen=True)
class Convergence:
    """What is run: the case, the target frame (0-based), iterations on it, the UPWS frame."""

    case: str = "healthy-deep-breath"
    frame: int = 1  # frame 2
    iterations: int = 1800
    upws_frame: int = -1  # the last frame
    options: dict[str, Any] = field(default_factory=dict)  # method options for every variant


def iterations_to_reach(curve: list[float], target: float) -> int | None:
    """The first k with curve[k] <= target (curve[k]: data loss at theta^(k)); None if never."""
    return next((k for k, v in enumerate(curve) if v <= target), None)


def run_variant(label: str, name: str, options: dict[str, Any], model: ForwardModel,
                dv: np.ndarray, conv: Convergence, warm_dir: Path,
                device: str) -> tuple[dict[str, Any], D2IP]:
    """Bring method `name` to the target frame, run it there; its curve and counts."""
    recon = create(name, model, device=device, warm_start_dir=warm_dir,
                   **{**options, **conv.options})
    assert isinstance(recon, D2IP)
    before = 0  # what reaching the target costs a session without a stored warm start
    if recon.config.upws:
        recon.ensure_warm_start(dv[conv.upws_frame])
        before += recon.config.iterations.cold
    for frame in dv[:conv.frame]:
        before += recon.fit(frame).iterations
    t0 = time.perf_counter()
    result = recon.fit(dv[conv.frame], FixedIterations(conv.iterations))
    return {"variant": label, "data_loss": [*result.data_history, result.data_loss],
            "loss": [*result.loss_history, result.loss], "seconds": time.perf_counter() - t0,
            "iterations_before": before, "settings": recon.settings}, recon


def truth_data_loss(recon: D2IP, truth: np.ndarray, dv: np.ndarray) -> float:
    """The data term of eq. (14) at the true image (its values inside the mask)."""
    values = torch.as_tensor(truth[recon.model.mask], dtype=torch.float32, device=recon.device)
    with torch.no_grad():
        return float(recon.objective.data(values, recon.measurements(dv)))


def benchmark(setup: Setup, conv: Convergence, out_dir: Path, device: str = "cpu",
              threads: int | None = 1, progress: bool = False) -> dict[str, Any]:
    """Run the curves; write convergence.json, convergence.png and the recording.

    `threads`: torch threads during the runs (None: as set), restored afterwards."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rec = recording_for(conv.case, setup, progress)
    rec.save(out_dir / f"recording-{conv.case}.npz")
    model = model_of(rec)
    dv = normalise(rec.voltages, rec.reference)
    warm_dir = out_dir / "warmstart"
    shutil.rmtree(warm_dir, ignore_errors=True)  # UPWS on `upws_frame`, in this run
    with torch_threads(threads):
        pairs = [run_variant(*curve, model, dv, conv, warm_dir, device) for curve in CURVES]
    runs = [run for run, _ in pairs]
    by_name = {r["variant"]: r for r in runs}
    targets = {"cold": by_name[BASELINE]["data_loss"][-1],
               "same_loss": by_name[SAME_LOSS]["data_loss"][-1],
               "truth": truth_data_loss(pairs[0][1], rec.truth[conv.frame], dv[conv.frame])}
    for r in runs:
        r["iterations_to"] = {t: iterations_to_reach(r["data_loss"], v)
                              for t, v in targets.items()}
    ratios = {t: _ratio(by_name, t, cold) for t, (_, cold) in TARGETS.items()}
    report = {"date": time.strftime("%Y-%m-%d"), "setup": asdict(setup),
              "convergence": asdict(conv), "frames": rec.n_frames, "device": device,
              "threads": threads, "targets": targets, "ratios": ratios, "runs": runs}
    (out_dir / "convergence.json").write_text(json.dumps(report, indent=2, default=str))
    plot(report, out_dir / "convergence.png")
    return report


def _ratio(by_name: dict[str, dict[str, Any]], target: str, cold: str) -> float | None:
    """D2IP's iterations to `target` over `cold`'s (None when either never gets there)."""
    k_full, k_cold = (by_name[n]["iterations_to"][target] for n in (FULL, cold))
    return k_full / k_cold if k_full is not None and k_cold else None


def plot(report: dict[str, Any], path: Path) -> None:
    """Data loss vs iteration, log scale, one curve per variant, the targets as lines."""
    fig = Figure(figsize=(9, 5.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    conv = report["convergence"]
    for r in report["runs"]:
        reach = ", ".join(f"{t} {'never' if k is None else k}"
                          for t, k in r["iterations_to"].items())
        ax.plot(r["data_loss"], color=COLOURS[r["variant"]], lw=1.2,
                label=f"{r['variant']} (reaches {reach})")
    for (target, value), style in zip(report["targets"].items(), ("--", ":", "-."),
                                      strict=True):
        ax.axhline(value, color="0.3", ls=style, lw=0.9,
                   label=f"{target}: {TARGETS[target][0]}, {value:.3g}")
    ax.set_yscale("log")
    ax.set_xscale("symlog", linthresh=10)  # the first iterations and the plateau, both visible
    ax.set_xlim(0, conv["iterations"])
    ax.set_xlabel(f"Adam iteration on frame {conv['frame'] + 1} (linear below 10, then log)")
    ax.set_ylabel("data loss (data term of eq. 14)")
    ratios = ", ".join(f"{t} {'-' if v is None else f'{v:.3f}'}"
                       for t, v in report["ratios"].items())
    ax.set_title(f"{conv['case']}, frame {conv['frame'] + 1} of {report['frames']}; "
                 f"d2ip/cold iterations to target: {ratios}", fontsize=10)
    ax.legend(fontsize=7.5)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
