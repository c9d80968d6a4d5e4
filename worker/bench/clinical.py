"""Clinical-accuracy benchmark (issue 15 §4), and the breath-synchronous design it measures (§1).

MSSIM says whether an image looks right; this benchmark says whether the clinician's number is
right. Per case, the simulation's truth and every method give tidal images, and the ventilation
parameters of `worker.ventilation` computed on each are compared:

- `tidal-breathing`: breaths are found online (`BreathDetector`) on the global curve of the
  frame-rate Tikhonov preview, as the live worker sees it. Each method then reconstructs every
  breath's tidal difference Δv(end-inspiration) - Δv(end-expiration) of the normalised data
  directly, in breath order, with the options it registered for tidal differences
  (`worker.recon.base.tidal_options`, as the worker's `breath` policy builds it): D2IP with
  TPP from breath to breath and the adaptive stop; `edip` from the educated weights every
  breath. That is the breath-synchronous design. The truth's tidal image of the same breath
  is the truth at end-inspiration minus at the breath's start.
- `edema-left` (one inhalation, no whole breath): one tidal image, the end of the inhalation
  against the reference (its start), as docs/ventilation.md suggests; each method reconstructs
  that one difference from its initial state (D2IP: from the warm start).

Tidal images are in the clinical sign (-Δσ/σ0). Each image's lung region is its own
(`lung_region` on the mean tidal image over the case's breaths), as a clinician would get it;
the Dice overlap with the truth's lung region is reported. Per method: the mean over breaths of
the absolute error of each parameter against the truth's (percentage points; GI in its own
unit), the tidal images' MSSIM, CC and ERR against the truth's (`worker.metrics.score`, one
data range for all breaths), seconds and iterations per breath (the methods' `FrameResult`).

Live timing, offline: breath k's tidal difference is ready when the detector confirmed its
end-inspiration (a frame time); it is reconstructed once ready and once breath k - 1's is done;
its lag is the finish time minus its end-inspiration. The preview's own cost (a matrix product
per frame) is left out.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from service.contract.geometry import resolve_geometry
from worker.bench.quality import Setup, model_of, recording_for
from worker.forward.model import ForwardModel
from worker.metrics import score
from worker.plot import plot_volumes
from worker.recon.base import create, normalise, reconstruct_recording, tidal_options
from worker.recording import Recording
from worker.simulation.cases import FRAME_RATE
from worker.ventilation.breaths import Breath, BreathDetector
from worker.ventilation.lung_mask import lung_region
from worker.ventilation.parameters import analyse
from worker.ventilation.regional import regional
from worker.ventilation.signal import global_impedance
from worker.ventilation.space import VoxelSpace, geometry_space

CASES = ("tidal-breathing", "edema-left")
PREVIEW = "tikhonov"
# the compared parameters: one of each pair that sums to 100 % (left/right, ventral/dorsal,
# cranial/caudal); `silent_pct` is the sum of the other two
PARAMETERS = ("left_pct", "ventral_pct", "cranial_pct", "cov_x_pct", "cov_y_pct", "cov_z_pct",
              "gi", "silent_pct", "silent_dependent_pct", "silent_nondependent_pct")
IMAGE_METRICS = ("mssim", "cc", "err")
IRREGULAR_DEPTH = 0.15  # a breath whose truth TIV is this far from the median (fraction)
GOAL_MSSIM_RATIO = 1.3
GOAL_METHODS = ("d2ip", "d2ip-scaled", "edip")  # the D2IP methods the §1 goal is reported for
# `edema-left` simulated as its reference (the start of the inhalation) and its end: the
# one tidal image needs no frame in between (20 frames give the same last frame, 18 solves more)
INHALATION_FRAMES = 2


@dataclass(frozen=True)
class ClinicalSetup:
    """What is simulated and how it is read: `duration_s` of `tidal-breathing` at 20 frames/s
    (`edema-left`: `INHALATION_FRAMES`), the model and the patient position (gravity)."""

    duration_s: float = 180.0
    snr_db: float | None = 50.0
    seed: int = 0
    geometry: Any = None
    protocol: Any = None
    grid: Any = None
    position: str = "supine"

    def simulation(self, case: str) -> Setup:
        """The simulation setup of `case` (the quality benchmark's, so both share the cache)."""
        frames = (int(round(self.duration_s * FRAME_RATE)) if case == "tidal-breathing"
                  else INHALATION_FRAMES)
        return Setup(frames=frames, snr_db=self.snr_db, seed=self.seed, geometry=self.geometry,
                     protocol=self.protocol, grid=self.grid)


@dataclass(frozen=True)
class Anatomy:
    """Where the voxels are: the body mask, the voxel space and the electrode rings."""

    mask: np.ndarray
    space: VoxelSpace
    ring_z: tuple[float, ...]
    position: str

    @classmethod
    def of(cls, rec: Recording, position: str) -> Anatomy:
        space, rings = geometry_space(resolve_geometry(rec.meta["geometry"]), rec.mask.shape)
        return cls(rec.mask, space, rings, position)


@dataclass
class Tidal:
    """The tidal images of one source (truth or a method), with their parameters."""

    images: np.ndarray  # (B, P, R, C), clinical sign -Δσ/σ0
    lung: np.ndarray  # (P, R, C) bool
    parameters: list[dict[str, float]]  # per breath, PARAMETERS
    seconds: list[float] = field(default_factory=list)
    iterations: list[int] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)


def tidal_parameters(images: np.ndarray, anatomy: Anatomy) -> tuple[np.ndarray,
                                                                    list[dict[str, float]]]:
    """The lung region of the mean tidal image, and each image's PARAMETERS over it (nan when
    the region is empty: no voxel ventilates)."""
    lung = lung_region(images.mean(axis=0), anatomy.mask, anatomy.space)
    if not lung.any():
        return lung, [dict.fromkeys(PARAMETERS, float("nan")) for _ in images]
    rows = []
    for image in images:
        values = regional(image, lung, anatomy.space, anatomy.ring_z, anatomy.position).scalars()
        rows.append({name: values[name] for name in PARAMETERS})
    return lung, rows


def truth_tidal(images: np.ndarray, anatomy: Anatomy) -> Tidal:
    """The truth's tidal images (clinical sign) and their parameters."""
    lung, rows = tidal_parameters(images, anatomy)
    return Tidal(images, lung, rows)


def reconstruct_tidal(name: str, model: ForwardModel, differences: np.ndarray,
                      anatomy: Anatomy, device: str = "cpu", progress: bool = False) -> Tidal:
    """Method `name` on the tidal differences (B, M) in order, one `push` each (its state
    carried from breath to breath); images in the clinical sign, and their parameters."""
    recon = create(name, model, device=device, **tidal_options(name))
    results = [recon.push(d) for d in tqdm(differences, desc=f"{name} (tidal)", unit="breath",
                                           disable=not progress)]
    images = -np.stack([r.volume for r in results]).astype(np.float64)
    lung, rows = tidal_parameters(images, anatomy)
    return Tidal(images, lung, rows, [r.milliseconds / 1e3 for r in results],
                 [r.iterations for r in results], recon.settings)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """2|A ∩ B| / (|A| + |B|) of two masks (nan when both are empty)."""
    total = int(a.sum() + b.sum())
    return float(2 * (a & b).sum() / total) if total else float("nan")


def compare(method: Tidal, truth: Tidal, mask: np.ndarray) -> dict[str, Any]:
    """A method's tidal images against the truth's: per breath and mean absolute parameter
    errors, image metrics, seconds and iterations."""
    errors = [{name: abs(m[name] - t[name]) for name in PARAMETERS}
              for m, t in zip(method.parameters, truth.parameters, strict=True)]
    metrics = score(method.images, truth.images, mask)
    mean_error = {name: _nanmean([e[name] for e in errors]) for name in PARAMETERS}
    return {
        "error": mean_error,
        "metrics": {name: metrics["mean"][name] for name in IMAGE_METRICS},
        "seconds_per_breath": _nanmean(method.seconds),
        "iterations_per_breath": _nanmean(method.iterations),
        "lung_dice": dice(method.lung, truth.lung),
        "lung_voxels": int(method.lung.sum()),
        "mean": {name: _nanmean([p[name] for p in method.parameters]) for name in PARAMETERS},
        "breaths": [{"parameters": p, "error": e, **{m: metrics[m][k] for m in IMAGE_METRICS},
                     **({"seconds": method.seconds[k], "iterations": method.iterations[k]}
                        if method.seconds else {})}
                    for k, (p, e) in enumerate(zip(method.parameters, errors, strict=True))],
        "settings": method.settings,
    }


def _nanmean(values: list[float] | list[int]) -> float:
    finite = [float(v) for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


@dataclass(frozen=True)
class OnlineBreath:
    """A breath the online detector reported, and the frame time its end-inspiration was
    confirmed at (when its tidal difference can be reconstructed)."""

    breath: Breath
    ready_s: float


def online_breaths(curve: np.ndarray, times: np.ndarray) -> list[OnlineBreath]:
    """Breaths of the global curve, fed one sample at a time to `BreathDetector`."""
    detector = BreathDetector(1.0 / float(np.median(np.diff(times))))
    confirmed: dict[int, float] = {}
    out = []
    for now, value in zip(times, curve, strict=True):
        update = detector.push(float(now), float(value))
        for point in update.turning_points:
            if point.kind == "end_inspiration":
                confirmed[point.index] = float(now)
        out += [OnlineBreath(b, confirmed.get(b.end_inspiration, float(now)))
                for b in update.breaths]
    return out


def live_lags(breaths: list[OnlineBreath], seconds: list[float]) -> list[float]:
    """Per breath, the time from its end-inspiration until its tidal image is done, when each
    is reconstructed once ready and after the previous one (a single worker)."""
    lags, busy_until = [], -np.inf
    for online, cost in zip(breaths, seconds, strict=True):
        busy_until = max(online.ready_s, busy_until) + cost
        lags.append(busy_until - online.breath.end_inspiration_s)
    return lags


def detection_agreement(online: list[Breath], offline: list[Breath]) -> dict[str, Any]:
    """Online breaths of the preview against the offline breaths of the truth: counts, and the
    end-inspiration time difference of the nearest online breath to each offline one."""
    if not online or not offline:
        return {"online": len(online), "offline": len(offline), "matched": 0}
    peaks = np.array([b.end_inspiration_s for b in online])
    gaps = [float(np.min(np.abs(peaks - b.end_inspiration_s))) for b in offline]
    half = 0.5 * float(np.median([b.duration_s for b in offline]))
    matched = [g for g in gaps if g < half]
    return {"online": len(online), "offline": len(offline), "matched": len(matched),
            "end_inspiration_gap_s": {"median": float(np.median(matched)) if matched else None,
                                      "max": float(np.max(matched)) if matched else None}}


def run_tidal_breathing(rec: Recording, model: ForwardModel, methods: list[str],
                        anatomy: Anatomy, device: str, progress: bool
                        ) -> tuple[dict[str, Any], Tidal, dict[str, Tidal]]:
    """The breath-synchronous benchmark on a `tidal-breathing` recording."""
    preview, _ = reconstruct_recording(create(PREVIEW, model, device=device), rec.voltages,
                                       rec.reference, progress=progress)
    online = online_breaths(global_impedance(preview, rec.mask), rec.frame_times)
    del preview
    if not online:
        raise ValueError("tidal-breathing: the online detector found no breath; simulate longer")
    breaths = [o.breath for o in online]
    dv = normalise(rec.voltages, rec.reference)
    starts = [b.start for b in breaths]
    peaks = [b.end_inspiration for b in breaths]
    truth = truth_tidal(-(rec.truth[peaks] - rec.truth[starts]).astype(np.float64), anatomy)
    tidals = {name: reconstruct_tidal(name, model, dv[peaks] - dv[starts], anatomy, device,
                                      progress) for name in methods}
    offline = analyse(rec.truth, rec.frame_times, rec.mask, anatomy.space, anatomy.ring_z)
    depth = [float(image[truth.lung].sum()) for image in truth.images]
    median_depth = float(np.median(depth))
    result: dict[str, Any] = {
        "frames": rec.n_frames, "duration_s": float(rec.frame_times[-1] - rec.frame_times[0]),
        "detection": detection_agreement(breaths, [b.breath for b in offline.breaths]),
        "breaths": [{"start_s": b.start_s, "end_inspiration_s": b.end_inspiration_s,
                     "end_s": b.end_s, "ready_s": o.ready_s,
                     "confirm_delay_s": o.ready_s - b.end_inspiration_s,
                     "depth": d / median_depth if median_depth > 0 else float("nan"),
                     "irregular_depth": bool(abs(d / median_depth - 1) > IRREGULAR_DEPTH)
                     if median_depth > 0 else False}
                    for o, b, d in zip(online, breaths, depth, strict=True)],
        "truth": {"mean": {name: _nanmean([p[name] for p in truth.parameters])
                           for name in PARAMETERS},
                  "lung_voxels": int(truth.lung.sum()), "parameters": truth.parameters,
                  "whole_recording": offline.summary()},
        "methods": {},
    }
    for name, tidal in tidals.items():
        row = compare(tidal, truth, rec.mask)
        row["lag_s"] = live_lags(online, tidal.seconds)
        row["within_period"] = sum(lag <= b.duration_s for lag, b in
                                   zip(row["lag_s"], breaths, strict=True))
        result["methods"][name] = row
    return result, truth, tidals


def run_single_inhalation(rec: Recording, model: ForwardModel, methods: list[str],
                          anatomy: Anatomy, device: str, progress: bool
                          ) -> tuple[dict[str, Any], Tidal, dict[str, Tidal]]:
    """One tidal image: the last frame (end of the inhalation) against the reference."""
    truth = truth_tidal(-rec.truth[-1:].astype(np.float64), anatomy)
    last = normalise(rec.voltages[-1:], rec.reference)
    tidals = {name: reconstruct_tidal(name, model, last, anatomy, device, progress)
              for name in methods}
    result: dict[str, Any] = {
        "frames": rec.n_frames,
        "tidal_image": "the end of the inhalation minus the reference (its start)",
        "truth": {"mean": truth.parameters[0], "lung_voxels": int(truth.lung.sum())},
        "methods": {name: compare(tidal, truth, rec.mask) for name, tidal in tidals.items()},
    }
    return result, truth, tidals


def run_case(case: str, methods: list[str], setup: ClinicalSetup, out_dir: Path,
             device: str = "cpu", progress: bool = False) -> dict[str, Any]:
    """Simulate (or load) `case`, run its benchmark and draw `tidal-<case>.png`."""
    rec = recording_for(case, setup.simulation(case), progress)
    model = model_of(rec)
    anatomy = Anatomy.of(rec, setup.position)
    run = run_tidal_breathing if case == "tidal-breathing" else run_single_inhalation
    result, truth, tidals = run(rec, model, methods, anatomy, device, progress)
    shown = len(truth.images) // 2
    panels = [("truth", -truth.images[shown])] + [(name, -tidal.images[shown])
                                                  for name, tidal in tidals.items()]
    plot_volumes(panels, rec.mask, out_dir / f"tidal-{case}.png",
                 frame_label=f"{case}: tidal image of breath {shown + 1} of "
                             f"{len(truth.images)} (end-inspiration minus start, Δσ/σ0)")
    return result


def goal(report: dict[str, Any]) -> dict[str, Any] | None:
    """Issue 15 §1 from the tidal-breathing case, per D2IP method run (`GOAL_METHODS`): its mean
    tidal MSSIM over Tikhonov's, its seconds per breath and its lag against the breath period.
    None without Tikhonov or any of them."""
    case = report["cases"].get("tidal-breathing")
    names = [n for n in GOAL_METHODS if case and n in case["methods"]]
    if not case or "tikhonov" not in case["methods"] or not names:
        return None
    tikhonov = case["methods"]["tikhonov"]["metrics"]["mssim"]
    periods = [b["end_s"] - b["start_s"] for b in case["breaths"]]
    result = {}
    for name in names:
        row = case["methods"][name]
        seconds = [b["seconds"] for b in row["breaths"]]
        lags = row["lag_s"]
        late = [k + 1 for k, (lag, period) in enumerate(zip(lags, periods, strict=True))
                if lag > period]
        result[name] = {
            "mssim": row["metrics"]["mssim"], "mssim_tikhonov": tikhonov,
            "mssim_ratio": row["metrics"]["mssim"] / tikhonov,
            "mssim_ratio_goal": GOAL_MSSIM_RATIO,
            "seconds_per_breath": {"median": float(np.median(seconds)),
                                   "max": float(max(seconds)), "first": seconds[0],
                                   "max_after_first": float(max(seconds[1:], default=np.nan))},
            "breath_period_s": float(np.mean(periods)),
            "lag_s": {"median": float(np.median(lags)), "max": float(max(lags)),
                      "last": lags[-1]},
            "within_period": row["within_period"], "breaths": len(seconds),
            "late_breaths": late,
            "warm_start": row["settings"].get("educated") or row["settings"].get("warm_start"),
        }
    return result


def benchmark(methods: list[str], cases: list[str], setup: ClinicalSetup, out_dir: Path,
              device: str = "cpu", progress: bool = False, threads: int | None = 1
              ) -> dict[str, Any]:
    """Run every case; write clinical.json, clinical.md and the figures; return the report.

    `threads`: torch threads for every method (None: as set), restored afterwards. The load
    average at the start and the end is recorded: seconds per breath are wall-clock times."""
    from worker.bench.speed import torch_threads

    out_dir.mkdir(parents=True, exist_ok=True)
    started, load = time.perf_counter(), os.getloadavg()[0]
    with torch_threads(threads):
        report: dict[str, Any] = {
            "date": time.strftime("%Y-%m-%d"), "setup": asdict(setup), "device": device,
            "threads": threads, "methods": methods, "method_options": {
                name: options for name in methods if (options := tidal_options(name))},
            "parameters": list(PARAMETERS),
            "cases": {case: run_case(case, methods, setup, out_dir, device, progress)
                      for case in cases},
        }
    report["goal"] = goal(report)
    report["wall_s"] = time.perf_counter() - started
    report["load_average"] = {"start": load, "end": os.getloadavg()[0]}
    (out_dir / "clinical.json").write_text(json.dumps(_json_safe(report), indent=2))
    (out_dir / "clinical.md").write_text(markdown(report))
    return report


def _json_safe(value: Any) -> Any:
    """nan and inf as null, numpy scalars as Python numbers."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


TITLES = {"left_pct": "left", "ventral_pct": "ventral", "cranial_pct": "cranial",
          "cov_x_pct": "CoV x", "cov_y_pct": "CoV y", "cov_z_pct": "CoV z", "gi": "GI",
          "silent_pct": "silent", "silent_dependent_pct": "DSS",
          "silent_nondependent_pct": "NSS"}


def _f(value: float | None, spec: str) -> str:
    return "–" if value is None or not np.isfinite(value) else format(value, spec)


def markdown_table(head: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table."""
    return (["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            + ["| " + " | ".join(row) + " |" for row in rows])


def case_table(case: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """(header, rows): the truth's values, then per method its absolute errors, image metrics
    and cost."""
    head = (["method"] + [TITLES[p] for p in PARAMETERS]
            + ["lung Dice", "MSSIM ↑", "CC ↑", "ERR ↓", "s/breath", "iterations/breath"])
    truth = case["truth"]["mean"]
    rows = [["truth (value)"] + [_f(truth[p], ".3f" if p == "gi" else ".1f")
                                 for p in PARAMETERS] + ["1", "1", "1", "0", "", ""]]
    for name, row in case["methods"].items():
        cells = [name] + [_f(row["error"][p], ".3f" if p == "gi" else ".1f") for p in PARAMETERS]
        cells += [_f(row["lung_dice"], ".2f")]
        cells += [_f(row["metrics"][m], ".3f") for m in IMAGE_METRICS]
        cells += [_f(row["seconds_per_breath"], ".3g"), _f(row["iterations_per_breath"], ".0f")]
        rows.append(cells)
    return head, rows


def breath_table(case: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) per breath: timing, depth, each method's tidal MSSIM, and the cost and
    lag of each."""
    names = list(case["methods"])
    head = (["breath", "end-insp. s", "confirmed +s", "depth"] + [f"MSSIM {n}" for n in names]
            + [f"{n} s / it / lag s" for n in names])
    rows = []
    for k, b in enumerate(case["breaths"]):
        cells = [str(k + 1), f"{b['end_inspiration_s']:.2f}", f"{b['confirm_delay_s']:.2f}",
                 f"{b['depth']:.2f}" + (" (irregular)" if b["irregular_depth"] else "")]
        cells += [_f(case["methods"][n]["breaths"][k]["mssim"], ".3f") for n in names]
        for n in names:
            row = case["methods"][n]
            cells.append(f"{row['breaths'][k]['seconds']:.3g} / "
                         f"{row['breaths'][k]['iterations']} / {row['lag_s'][k]:.2f}")
        rows.append(cells)
    return head, rows


def goal_lines(goals: dict[str, Any]) -> list[str]:
    """The §1 goal in sentences, per D2IP method."""
    lines = []
    for name, g in goals.items():
        met = "met" if g["mssim_ratio"] >= g["mssim_ratio_goal"] else "not met"
        within = g["within_period"] == g["breaths"]
        sec, lag = g["seconds_per_breath"], g["lag_s"]
        lines += [f"- `{name}`: tidal MSSIM {g['mssim']:.3f} against Tikhonov's "
                  f"{g['mssim_tikhonov']:.3f} = **{g['mssim_ratio']:.2f}x** (goal "
                  f"≥ {g['mssim_ratio_goal']}x: {met}); seconds per breath median "
                  f"{sec['median']:.2f}, max {sec['max']:.2f}, first {sec['first']:.2f}, max "
                  f"after the first {sec['max_after_first']:.2f} (mean breath period "
                  f"{g['breath_period_s']:.2f} s); lag from end-inspiration to its tidal image "
                  f"(one worker, breaths in order) median {lag['median']:.2f} s, max "
                  f"{lag['max']:.2f} s, last {lag['last']:.2f} s: {g['within_period']} of "
                  f"{g['breaths']} breaths within their own breath period "
                  f"({'met' if within else 'not met'}; late: {g['late_breaths'] or 'none'}); "
                  f"start {g['warm_start'] or 'unknown'}."]
    return lines


def markdown(report: dict[str, Any]) -> str:
    """clinical.md: setup, one table per case, the tidal-breathing breaths, the §1 goal."""
    setup = report["setup"]
    lines = [f"# Clinical accuracy ({report['date']})", "",
             f"`tidal-breathing` {setup['duration_s']:g} s at {FRAME_RATE:g} frames/s and "
             f"`edema-left`, {setup['snr_db']} dB, seed {setup['seed']}, grid "
             f"{setup['grid']}, position {setup['position']}; device {report['device']}, "
             f"torch threads {report['threads'] or 'as set'}; method options "
             f"{report['method_options'] or 'defaults'}; wall time {report['wall_s']:.0f} s; "
             f"1-minute load average {report['load_average']['start']:.1f} at the start, "
             f"{report['load_average']['end']:.1f} at the end ({os.cpu_count()} CPUs).",
             "", "Parameter columns: mean absolute error against the truth over the breaths, "
             "percentage points (GI: its own unit); the first row is the truth's mean value. "
             "left, ventral, cranial: shares of the tidal image (right, dorsal, caudal are "
             "100 minus them); DSS/NSS: dependent/non-dependent silent spaces, % of the lung "
             "region. MSSIM/CC/ERR: tidal image against the truth's.", ""]
    for name, case in report["cases"].items():
        lines += [f"## {name}", ""]
        if "detection" in case:
            d = case["detection"]
            gap = d.get("end_inspiration_gap_s") or {}
            lines += [f"{len(case['breaths'])} breaths found online on the Tikhonov preview "
                      f"({case['duration_s']:.0f} s); the truth's offline analysis finds "
                      f"{d['offline']}, {d['matched']} matched (end-inspiration gap median "
                      f"{_f(gap.get('median'), '.3f')} s, max {_f(gap.get('max'), '.3f')} s).",
                      ""]
        else:
            lines += [f"One tidal image: {case['tidal_image']}.", ""]
        lines += markdown_table(*case_table(case)) + [""]
        if "breaths" in case:
            lines += ["Per breath (depth: the truth's TIV over the median; lag: from "
                      "end-inspiration until the tidal image is done):", ""]
            lines += markdown_table(*breath_table(case)) + [""]
    if report.get("goal"):
        lines += ["## Breath-synchronous D2IP (issue 15 §1)", ""] + goal_lines(report["goal"])
    return "\n".join(lines) + "\n"
