"""The tank benchmark of Diff-INR (issue 18): TV, INR+TV and Diff-INR on `tank-shapes`.

The tank is simulated once per SNR (`worker.simulation`, fine mesh, noise on frames and
reference, cached like every benchmark's simulation, `worker.bench.quality.recording_for`).
Each run reconstructs the one frame with one method and setting on a
reconstruction model (the geometry's mesh, or one of another `mesh_size` for the mesh study)
and is scored on the electrode plane (`worker.metrics.plane_at` at the ring's height): SSIM
and PSNR against the voxel truth inside the tank, and RCR per inclusion (eq. 19). Seconds are
the method's own time for the frame (model and prior loading excluded), on the torch threads
given.

Studies (each a list of runs, `STUDIES`): `main` (the three methods at their defaults, which
relinearise the INR methods' data term, and TV relinearised as often), `linear` (the INR
methods with the linear data term every method shares), `mesh`
(three reconstruction meshes), `noise` (60, 50, 40 dB), `alpha` (eq. 18's hyperparameter),
`lambda` (Diff-INR's κ), `t-range` (the prior's time-step sub-range), `slices` (axial planes
only against axial, coronal and sagittal, and 16 slices a step against 4), `seeds` (other seeds
of the INR's initial network and Fourier features and of the SDS draws: the spread of one run),
`iterations` (Diff-INR with at most 1000 Adam iterations instead of 400), `d2ip` (Tikhonov,
GREIT and D2IP with its simulated defaults, its range from the data, and its real-data
defaults: issue 19).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from service.contract.geometry import resolve_geometry
from worker.bench.quality import Setup, recording_for
from worker.forward import load_model
from worker.metrics import mssim, plane_at, psnr, rcr
from worker.plot import plot_planes
from worker.recon.base import create, reconstruct_recording
from worker.recon.diffinr.methods import RELINEARISE
from worker.recording import Recording
from worker.simulation.tank import TankPhantom, tank_phantom

CASE = "tank-shapes"
METHODS = ("tv", "inr-tv", "diff-inr")
COVERAGE_SAMPLES = 5  # per pixel side, for the inclusions' pixel masks


@dataclass(frozen=True)
class TankSetup:
    """The simulated tank and the default reconstruction."""

    geometry: str = "cylinder-1x32"
    protocol: str = "skip4"
    grid: tuple[int, int, int] = (8, 32, 32)
    snr_db: float = 50.0
    seed: int = 0
    prior: str | None = None  # Diff-INR's prior weights (`SDSPrior.load`); None: the shipped


@dataclass(frozen=True)
class Run:
    """One reconstruction: a label, a method, its options, and what differs from the setup."""

    label: str
    method: str
    options: dict[str, Any] = field(default_factory=dict)
    snr_db: float | None = None  # None: the setup's
    mesh_size: float | None = None  # None: the geometry's
    t_range: tuple[float, float] | None = None  # Diff-INR's prior sub-range; None: default


def study_runs(study: str) -> list[Run]:
    """The runs of one study (module docstring)."""
    if study == "main":  # TV linear and relinearised as often as the INR methods' default
        return [Run("tv", "tv"), Run("tv relinearised", "tv", {"relinearise": RELINEARISE}),
                Run("inr-tv", "inr-tv"), Run("diff-inr", "diff-inr")]
    if study == "linear":  # the INR methods with the linear data term every method shares
        return [Run(f"{m} linear", m, {"relinearise": 0}) for m in ("inr-tv", "diff-inr")]
    if study == "mesh":
        return [Run(f"{m} mesh {size * 1e3:.0f} mm", m, mesh_size=size)
                for size in (0.012, 0.009, 0.007) for m in METHODS]
    if study == "noise":
        return [Run(f"{m} {snr:.0f} dB", m, snr_db=snr) for snr in (60.0, 50.0, 40.0)
                for m in METHODS]
    if study == "alpha":
        return [Run(f"{m} α {a}", m, {"alpha": a}) for a in (0.075, 0.15, 0.3)
                for m in ("inr-tv", "diff-inr")]
    if study == "lambda":
        return [Run(f"diff-inr κ {k:g}", "diff-inr", {"kappa": k}) for k in (1.0, 10.0, 100.0)]
    if study == "t-range":
        return [Run(f"diff-inr t {lo}-{hi}", "diff-inr", t_range=(lo, hi))
                for lo, hi in ((0.02, 0.2), (0.1, 0.5), (0.3, 0.9), (0.0, 1.0))]
    if study == "slices":
        return [Run("diff-inr axial", "diff-inr", {"orientations": ("axial",)}),
                Run("diff-inr 3 orientations", "diff-inr"),
                Run("diff-inr 16 slices", "diff-inr", {"slices": 16})]
    if study == "seeds":
        return [Run(f"{m} seed {s}", m, {"seed": s}) for s in (1, 2)
                for m in ("inr-tv", "diff-inr")]
    if study == "iterations":
        return [Run("diff-inr 1000 iterations", "diff-inr", {"max_iter": 1000})]
    if study == "d2ip":  # issue 19: D2IP against the linear methods on known inclusions
        return [Run("tikhonov", "tikhonov"), Run("greit", "greit"), Run("d2ip", "d2ip"),
                Run("d2ip data range", "d2ip", {"out_range": "data"}),
                Run("d2ip real-data defaults", "d2ip", {"data": "real"})]
    raise ValueError(f"study: unknown study {study!r}; studies: {', '.join(STUDIES)}")


STUDIES = ("main", "linear", "mesh", "noise", "alpha", "lambda", "t-range", "slices", "seeds",
           "iterations", "d2ip")


@dataclass(frozen=True)
class PlaneTruth:
    """The truth on the electrode plane: picture, tank mask, inclusions and their areas."""

    picture: np.ndarray  # (R, C) Δσ/σ0
    mask: np.ndarray  # (R, C) inside the tank
    inclusions: np.ndarray  # (K, R, C): pixels at least half covered by inclusion k
    areas: np.ndarray  # (K,) m², exact
    signs: np.ndarray  # (K,) +1 more, -1 less conductive than saline
    names: tuple[str, ...]
    domain_area: float  # m²
    height: float  # the electrode plane, a fraction of the slab


def plane_truth(rec: Recording, phantom: TankPhantom) -> PlaneTruth:
    """The electrode plane's truth of the tank recording (the one ring's height)."""
    geometry = resolve_geometry(rec.meta["geometry"])
    dom = geometry.domain
    height = float(np.mean(geometry.electrodes.ring_heights)) / dom.height
    mask = rec.mask[0]
    rows, cols = mask.shape
    sub = (np.arange(COVERAGE_SAMPLES) + 0.5) / COVERAGE_SAMPLES
    ys = -dom.depth / 2 + (np.arange(rows)[:, None] + sub[None]) * dom.depth / rows
    xs = -dom.width / 2 + (np.arange(cols)[:, None] + sub[None]) * dom.width / cols
    yy, xx = np.meshgrid(ys.ravel(), xs.ravel(), indexing="ij")
    points = np.column_stack([xx.ravel(), yy.ravel()])
    shape = (rows, COVERAGE_SAMPLES, cols, COVERAGE_SAMPLES)
    inclusions = np.stack([inc.contains(points).reshape(shape).mean(axis=(1, 3)) >= 0.5
                           for inc in phantom.inclusions]) & mask
    return PlaneTruth(
        picture=plane_at(rec.truth[0], height), mask=mask, inclusions=inclusions,
        areas=np.array([inc.area for inc in phantom.inclusions]),
        signs=np.array([np.sign(inc.sigma - phantom.background) for inc in phantom.inclusions]),
        names=tuple(inc.name for inc in phantom.inclusions),
        domain_area=float(np.pi * dom.radius**2), height=height)


def tank_recording(setup: TankSetup, snr_db: float) -> Recording:
    """The simulated tank at this SNR (from the simulation cache, or simulated now)."""
    return recording_for(CASE, Setup(frames=1, snr_db=snr_db, seed=setup.seed,
                                      geometry=setup.geometry, protocol=setup.protocol,
                                      grid=list(setup.grid)), progress=True)


def run_one(run: Run, setup: TankSetup, truth: PlaneTruth,
            threads: int | None) -> tuple[dict[str, Any], np.ndarray]:
    """Reconstruct and score one run; the row and its electrode-plane picture."""
    from worker.bench.speed import torch_threads

    geometry: Any = setup.geometry
    if run.mesh_size is not None:
        geometry = {"preset": setup.geometry, "mesh_size": run.mesh_size}
    model = load_model(geometry, setup.protocol, list(setup.grid), progress=True)
    options = dict(run.options)
    if run.method == "diff-inr" and (setup.prior is not None or run.t_range is not None):
        from worker.recon.diffinr.sds import DEFAULT_WEIGHTS, T_RANGE, SDSPrior

        options["prior"] = SDSPrior.load(Path(setup.prior or DEFAULT_WEIGHTS),
                                         t_range=run.t_range or T_RANGE)
    snr = setup.snr_db if run.snr_db is None else run.snr_db
    rec = tank_recording(setup, snr)
    with torch_threads(threads):
        recon = create(run.method, model, **options)
        volumes, results = reconstruct_recording(recon, rec.voltages, rec.reference)
    picture = plane_at(volumes[0], truth.height)
    rng = float(truth.picture[truth.mask].max() - truth.picture[truth.mask].min())
    ratios = rcr(picture, truth.inclusions, truth.areas, truth.signs, truth.mask,
                 truth.domain_area)
    settings = {k: v for k, v in recon.settings.items() if k != "prior"}
    row = {"label": run.label, "method": run.method, "snr_db": snr,
           "mesh_size": model.geometry.mesh_size, "n_elements": model.mesh.n_elements,
           "ssim": mssim(picture, truth.picture, truth.mask, rng, 7),
           "psnr": psnr(picture[truth.mask], truth.picture[truth.mask], rng),
           **{f"rcr_{name}": float(r) for name, r in zip(truth.names, ratios, strict=True)},
           "seconds": results[0].milliseconds / 1e3, "iterations": results[0].iterations,
           "settings": settings}
    return row, picture


def benchmark(studies: list[str], setup: TankSetup, out_dir: Path, threads: int | None = 1,
              labels: list[str] | None = None) -> dict[str, Any]:
    """Run the studies (only the runs named in `labels`, if given); write tank.json, tank.md
    and tank-<study>.png; return the report."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rec = tank_recording(setup, setup.snr_db)
    truth = plane_truth(rec, tank_phantom(resolve_geometry(rec.meta["geometry"])))
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "setup": asdict(setup),
                              "threads": threads, "inclusions": list(truth.names),
                              "studies": {}}
    runs = [(study, run) for study in studies for run in study_runs(study)
            if labels is None or run.label in labels]
    pictures: dict[str, list[tuple[str, np.ndarray]]] = {s: [("truth", truth.picture)]
                                                          for s in studies}
    for study, run in tqdm(runs, desc="tank", unit="run"):
        row, picture = run_one(run, setup, truth, threads)
        report["studies"].setdefault(study, []).append(row)
        pictures[study].append((run.label, picture))
        (out_dir / "tank.json").write_text(json.dumps(report, indent=2, default=str))
    for study in studies:
        plot_planes(pictures[study], truth.mask, out_dir / f"tank-{study}.png",
                    title=f"{CASE}, electrode plane, {setup.geometry} {setup.protocol}")
    (out_dir / "tank.md").write_text(markdown(report))
    return report


def markdown(report: dict[str, Any]) -> str:
    """tank.md: one table per study."""
    names = report["inclusions"]
    setup = report["setup"]
    lines = [f"# Tank benchmark ({report['date']})", "",
             f"`{CASE}` on {setup['geometry']} ({setup['protocol']}), grid "
             f"{'x'.join(map(str, setup['grid']))}, {setup['snr_db']} dB unless stated, seed "
             f"{setup['seed']}, torch threads {report['threads']}. Electrode plane: SSIM, PSNR, "
             "RCR per inclusion (eq. 19, 1 is exact)."]
    header = ["run", "SSIM ↑", "PSNR dB ↑", *[f"RCR {n}" for n in names], "s/frame",
              "iterations"]
    for study, rows in report["studies"].items():
        lines += ["", f"## {study}", "", "| " + " | ".join(header) + " |",
                  "|" + "---|" * len(header)]
        for row in rows:
            cells = [row["label"], f"{row['ssim']:.3f}", f"{row['psnr']:.2f}",
                     *[f"{row[f'rcr_{n}']:.2f}" for n in names], f"{row['seconds']:.1f}",
                     str(row["iterations"])]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
