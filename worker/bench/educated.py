"""Educated DIP against the seed's claims (issue 17 §1): `eitmon bench educated`.

On each case (default `healthy-deep-breath` and `edema-left`, 20 frames, 50 dB, seed 0: the
quality benchmark's recordings, `bench.quality.recording_for`), scored with `metrics.score`
(means over the frames):

- `d2ip`, the paper's schedule (the UPWS warm start from the store, `d2ip.warm_start`, as
  sessions get it; 450 then 250 iterations a frame), or its row of a `bench quality` report of
  the same setup (`d2ip_from`: the reconstruction is deterministic, and the row is labelled);
- `edip`, the same schedule from the educated weights (quality at equal iterations);
- `edip` with N iterations on every frame, N in `sweep`: the smallest N whose mean MSSIM is at
  least D2IP's and whose mean ERR is at most D2IP's is "iterations to reach D2IP's final
  quality" (None when no N of the sweep, nor the paper schedule, gets there);
- the pretrained network alone (one forward pass on each frame's preview, no fine-tuning: edip
  at 0 iterations, a candidate for the count above), and the Tikhonov preview itself.

On the first frame of the first case, quality against iteration from three starts (the seed's
Fig. 5): Kaiming (cold DIP with D2IP's loss, Z noise), the UPWS warm start (D2IP), the educated
weights (EDIP), scored every `curve_every` iterations with the sequence's data range.
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
from tqdm import tqdm

from worker.bench.quality import Setup, model_of, recording_for
from worker.bench.speed import torch_threads
from worker.metrics import METRICS, data_range, err, mssim, score, ssim_window
from worker.plot import plot_volumes
from worker.recon.base import create, normalise, reconstruct_recording
from worker.recon.d2ip.optimise import FixedIterations
from worker.recon.d2ip.reconstructor import D2IP
from worker.recon.educated.reconstructor import EducatedDIP

ALONE = "edip, no fine-tuning (the pretrained network alone)"
STARTS = (("dip (Kaiming)", "d2ip-no-upws"), ("d2ip (UPWS)", "d2ip"), ("edip (educated)", "edip"))
COLOURS = {"dip (Kaiming)": "tab:blue", "d2ip (UPWS)": "tab:purple",
           "edip (educated)": "tab:green"}


@dataclass(frozen=True)
class EducatedBench:
    """What is run (module docstring)."""

    cases: tuple[str, ...] = ("healthy-deep-breath", "edema-left")
    sweep: tuple[int, ...] = (10, 25, 50, 100)
    curve_iterations: int = 450
    curve_every: int = 10
    curve: bool = True
    paper: bool = True  # edip with the paper's schedule (off: a run of the other parts alone)
    progress: bool = False  # a bar per reconstruction (frame by frame) and per curve
    d2ip: bool = True  # run d2ip when `d2ip_from` has no row (off: no d2ip row, no comparison)
    options: dict[str, Any] = field(default_factory=dict)  # method options; `pretrain_*`: edip
    d2ip_from: tuple[Path, ...] = ()  # quality.json files whose d2ip rows stand for the d2ip run

    def for_method(self, name: str, **more: Any) -> dict[str, Any]:
        """The options of method `name`: `options` (the `pretrain_*` ones for edip only),
        then `more`."""
        return {**{k: v for k, v in self.options.items()
                   if name == "edip" or not k.startswith("pretrain_")}, **more}


def _row(name: str, volumes: np.ndarray, truth: np.ndarray, mask: np.ndarray,
         iterations: list[int], seconds: float, extra: int = 0) -> dict[str, Any]:
    return {"method": name, **score(volumes, truth, mask)["mean"],
            "iterations_per_frame": float(np.mean(iterations)),
            "iterations_total": int(np.sum(iterations)) + extra, "seconds": seconds}


def _run(name: str, model: Any, rec: Any, bench: EducatedBench, label: str,
         **options: Any) -> tuple[dict[str, Any], np.ndarray]:
    recon = create(name, model, device="cpu", **bench.for_method(name, **options))
    t0 = time.perf_counter()
    volumes, frames = reconstruct_recording(recon, rec.voltages, rec.reference,
                                            progress=bench.progress, batch=1)
    upws = recon.config.iterations.cold * recon.upws_runs if isinstance(recon, D2IP) else 0
    row = _row(label, volumes, rec.truth, rec.mask, [f.iterations for f in frames],
               time.perf_counter() - t0)
    row["upws_iterations_in_first_frame"] = upws
    return row, volumes


def d2ip_row(case: str, setup: Setup, files: tuple[Path, ...]) -> dict[str, Any] | None:
    """D2IP's row of `case` from a `bench quality` report (quality.json) of the same setup
    and default options, in this benchmark's form; None when no file has it. The
    reconstructions are deterministic, so a report of the same code stands for a rerun."""
    for path in files:
        report = json.loads(Path(path).read_text())
        if report["setup"] != asdict(setup):
            raise ValueError(f"{path}: another setup ({report['setup']}, not {asdict(setup)})")
        for row in report["rows"]:
            if row["case"] == case and row["method"] == "d2ip":
                frames = report["frames"][case]
                return {"method": f"d2ip (paper schedule; {Path(path).name} of "
                                  f"{report['date']})",
                        **{m: row[m] for m in METRICS},
                        "iterations_per_frame": row["iterations"],
                        "iterations_total": int(round(row["iterations"] * frames)),
                        "seconds": row["seconds_per_frame"] * frames, "source": str(path)}
    return None


def run_case(case: str, bench: EducatedBench, setup: Setup, out_dir: Path) -> dict[str, Any]:
    """All rows of one case, the iterations to reach D2IP's quality, and its picture."""
    rec = recording_for(case, setup)
    model = model_of(rec)
    rows, panels = [], [("truth", rec.truth[-1])]
    d2ip = d2ip_row(case, setup, bench.d2ip_from)
    if d2ip is None and bench.d2ip:
        d2ip, vol = _run("d2ip", model, rec, bench, "d2ip (paper schedule)")
        panels.append(("d2ip", vol[-1]))
    if d2ip is not None:
        rows.append(d2ip)
    if bench.paper:
        edip, vol = _run("edip", model, rec, bench, "edip (paper schedule)")
        rows.append(edip)
        panels.append(("edip", vol[-1]))
    for n in bench.sweep:
        row, _ = _run("edip", model, rec, bench, f"edip ({n} a frame)",
                      iterations=(1800, n, n))
        row["per_frame"] = n
        rows.append(row)
    pre = create("edip", model, device="cpu", **bench.for_method("edip"))
    assert isinstance(pre, EducatedDIP)
    dv = normalise(rec.voltages, rec.reference)
    t0 = time.perf_counter()
    alone = np.stack([model.to_volume(pre.pretrained(f).cpu().numpy()) for f in dv])
    rows.append(_row(ALONE, alone, rec.truth, rec.mask, [0] * len(dv),
                     time.perf_counter() - t0))
    panels.append(("pretrained alone", alone[-1]))
    t0 = time.perf_counter()
    preview = np.stack([model.to_volume(pre.preview(f).cpu().numpy()) for f in dv])
    rows.append(_row("tikhonov (the preview)", preview, rec.truth, rec.mask, [0] * len(dv),
                     time.perf_counter() - t0))
    panels.append(("tikhonov preview", preview[-1]))
    plot_volumes(panels, rec.mask, out_dir / f"slices-{case}.png",
                 frame_label=f"{case}: frame {rec.n_frames} of {rec.n_frames}, "
                             f"{setup.snr_db} dB")
    candidates = [(r["iterations_per_frame"], r["method"]) for r in rows
                  if d2ip is not None and r["method"].startswith("edip")
                  and r["mssim"] >= d2ip["mssim"] and r["err"] <= d2ip["err"]]
    reach = min(candidates) if candidates else None
    return {"case": case, "frames": rec.n_frames, "rows": rows,
            "reaches_d2ip": None if reach is None else {"iterations_per_frame": reach[0],
                                                        "method": reach[1]}}


def quality_curve(case: str, bench: EducatedBench, setup: Setup) -> dict[str, Any]:
    """MSSIM and ERR of frame 1 vs iteration from the three starts (module docstring)."""
    rec = recording_for(case, setup)
    model = model_of(rec)
    dv = normalise(rec.voltages, rec.reference)[0]
    truth, mask = rec.truth[0], rec.mask
    rng, window = data_range(rec.truth, mask), ssim_window(mask.shape)
    curves: dict[str, dict[str, list[float]]] = {}
    for label, name in STARTS:
        recon = create(name, model, device="cpu", **bench.for_method(name))
        assert isinstance(recon, D2IP)
        recon.restart(dv)
        curve: dict[str, list[float]] = {"iteration": [], "mssim": [], "err": []}
        done = 0
        bar = tqdm(total=bench.curve_iterations, desc=f"curve {label}", unit="iteration",
                   disable=not bench.progress, mininterval=2.0)
        while done <= bench.curve_iterations:
            result = recon._optimise(dv, None, FixedIterations(bench.curve_every)) if done \
                else _start_values(recon, dv)
            volume = model.to_volume(result.values.cpu().numpy())
            curve["iteration"].append(done)
            curve["mssim"].append(mssim(volume, truth, mask, rng, window))
            curve["err"].append(err(volume[mask], truth[mask]))
            bar.update(bench.curve_every if done else 0)
            done += bench.curve_every
        bar.close()
        curves[label] = curve
    return {"case": case, "frame": 1, "curves": curves}


def _start_values(recon: D2IP, dv: np.ndarray) -> Any:
    """The objective at the current weights without a step (iteration 0)."""
    if isinstance(recon, EducatedDIP):
        recon.feed(dv)
    with torch.no_grad():
        return recon.objective(recon.measurements(dv))


def benchmark(bench: EducatedBench, setup: Setup, out_dir: Path,
              threads: int | None = 1) -> dict[str, Any]:
    """Run everything; write educated.json, educated.md and the figures."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with torch_threads(threads):
        cases = [run_case(c, bench, setup, out_dir) for c in bench.cases]
        curve = quality_curve(bench.cases[0], bench, setup) if bench.curve else None
    report = {"date": time.strftime("%Y-%m-%d"), "bench": asdict(bench), "setup": asdict(setup),
              "threads": threads, "cases": cases, "curve": curve}
    (out_dir / "educated.json").write_text(json.dumps(report, indent=2, default=str))
    (out_dir / "educated.md").write_text(markdown(report))
    if curve is not None:
        plot_curve(curve, out_dir / "educated-curve.png")
    return report


def markdown(report: dict[str, Any]) -> str:
    """The tables of educated.md."""
    lines = [f"# Educated DIP against D2IP ({report['date']}, {report['setup']['snr_db']} dB)",
             ""]
    for case in report["cases"]:
        reach = case["reaches_d2ip"]
        lines += [f"## {case['case']} ({case['frames']} frames)", "",
                  "| method | CC | MSSIM | ERR | iterations/frame | iterations in all | s |",
                  "|---|---|---|---|---|---|---|"]
        for r in case["rows"]:
            lines.append(f"| {r['method']} | {r['cc']:.3f} | {r['mssim']:.3f} | {r['err']:.3f} "
                         f"| {r['iterations_per_frame']:.0f} | {r['iterations_total']} "
                         f"| {r['seconds']:.0f} |")
        lines += ["", "edip reaches D2IP's quality (MSSIM >=, ERR <=): "
                  + ("no d2ip row in this run" if not case["rows"][0]["method"].startswith(
                      "d2ip") else "never in this sweep" if reach is None else
                     f"{reach['method']}, {reach['iterations_per_frame']:.0f} iterations a frame"),
                  ""]
    return "\n".join(lines)


def plot_curve(curve: dict[str, Any], path: Path) -> None:
    """MSSIM and ERR against iteration, one line per start."""
    fig = Figure(figsize=(10, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    for label, c in curve["curves"].items():
        for ax, metric in zip(axes, ("mssim", "err"), strict=True):
            ax.plot(c["iteration"], c[metric], label=label, color=COLOURS[label])
    for ax, metric in zip(axes, ("MSSIM ↑", "ERR ↓"), strict=True):
        ax.set_xlabel(f"Adam iteration on frame {curve['frame']}")
        ax.set_ylabel(metric)
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{curve['case']}, frame {curve['frame']}: quality from three starts")
    fig.tight_layout()
    fig.savefig(path)
