"""Real-data proof (issue 19 §4): the two real recordings reconstructed in 3D by each method,
their tidal images side by side, and plausibility checks in place of a truth.

Per recording (`RECORDINGS`, read with `worker.devices.importer.read_recording`: the EIDORS
protocol, electrodes renumbered to the model's, reference the mean of all frames), on the
single-ring model of the patient's own thorax (`patient_geometry` of what the README states of
the patient, with the Göttingen belt; `geometry="thorax-1x16"` gives the adult outline):
- the linear methods (`LINEAR`, Tikhonov and GREIT) reconstruct every frame; the ventilation
  analysis (`worker.ventilation.analyse`) finds the breaths on the global curve, the respiratory
  rate (from the breaths and spectrally) and the heart rate (`worker.ventilation.heart`), and
  the tidal image, the mean over breaths of end-inspiration minus start (impedance, -Δσ/σ0);
- TV, iterative, reconstructs only the start and end-inspiration frames of the first
  `tv_breaths` breaths that Tikhonov's analysis found; its tidal image is the mean difference;
- D2IP reconstructs the tidal differences of the first `d2ip_breaths` of those breaths (the
  end-inspiration frame's normalised Δv minus the start's), as the worker's `breath` policy
  feeds it, with TPP from breath to breath (`breath_tidal`); its tidal image is the mean of the
  breaths' images, its first-image time the first breath's seconds (a warm start included);
  its agreement with the linear methods' tidal images is reported (CC);
- image checks on each tidal image (`image_checks`): the ventilation's share in the left and
  right halves of the body, the number of separate ventilated regions in the electrodes'
  plane, the heart region's ventilation against the lungs', the opposite-signed part
  against the ventilation part (the issue's "1.14x vs 0.48x" measure), and the share in the
  dependent half along gravity (the patient's position: the neonate lies prone);
- exclusion check: Tikhonov and GREIT again with one electrode excluded
  (`worker.recon.weighting`): CC and ERR of the tidal image against the one with all
  electrodes.
The heart region is the phantom's heart (`worker.simulation.phantom`) on the model's grid:
where the simulations put it, anterior left of centre.
"""

from __future__ import annotations

import json
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from tqdm import tqdm

from service.contract.belts import BELTS
from service.contract.patient import PatientSpec, patient_geometry
from worker.devices.importer import read_recording
from worker.forward import load_model
from worker.forward.model import ForwardModel
from worker.metrics import cc, err
from worker.recon.base import create, normalise, reconstruct_recording
from worker.recon.greit import voxel_centres
from worker.recon.weighting import DataWeighting, weighted_model
from worker.recording import Recording
from worker.simulation.phantom import thorax_phantom
from worker.ventilation.parameters import Analysis, AnalysisSettings, analyse
from worker.ventilation.regional import regional
from worker.ventilation.signal import voxel_impedance
from worker.ventilation.space import VoxelSpace

LINEAR = ("tikhonov", "greit")
DEEP = "d2ip"
REAL_OPTIONS: dict[str, Any] = {"data": "real"}  # D2IP's real-data defaults (docs/d2ip.md)
VENTILATED = 0.5  # a voxel is ventilated above this fraction of the tidal image's maximum


@dataclass(frozen=True)
class RealRecording:
    """One real file, what is known about it, and its required attribution."""

    name: str
    path: str  # relative to the data folder
    subject: str  # worker.ventilation's rate limits: "adult" or "neonate"
    stated_respiratory_per_min: float | None
    stated_heart_per_min: float | None
    attribution: str
    patient: PatientSpec  # what the README states of the patient's size
    position: str  # and of the position (gravity)


RECORDINGS = (
    RealRecording(
        "neonate", "neonate-spontaneous/P04P-1016.get", "neonate", None, None,
        "Neonate, spontaneous breathing: data contributed by Inéz Frerichs. S. Heinrich, "
        "H. Schiffmann, A. Frerichs, A. Klockgether-Radke, I. Frerichs, \"Body and head position "
        "effects on regional lung ventilation in infants: an electrical impedance tomography "
        "study\", Intensive Care Med. 32:1392-1398, 2006.",
        PatientSpec(age_group="neonate"), "prone"),
    RealRecording(
        "child", "child-lung-injury/CHB_CONV05-ref.get", "adult", 12.0, 135.0,
        "Child with acute lung injury: Wolf GK, Grychtol B, Thompson JE, Arnold JH "
        "(contributors). Wolf GK, Grychtol B, Frerichs I, van Genderingen HR, Zurakowski D, "
        "Thompson JE, Arnold JH, \"Regional lung volume changes in children with acute "
        "respiratory distress syndrome during a derecruitment maneuver\", Critical Care "
        "Medicine 35(8):1972-8, 2007.",
        PatientSpec(age_group="child", weight_kg=25.0), "supine"),
)
BELT = BELTS["goettingen-16"]  # both files: Goe-MF II, 16 electrodes
PATIENT = "patient"  # the `geometry` that builds each recording's thorax from its patient
LICENSE = "Creative Commons Artistic License (with Attribution); EIDORS contributed data."


def space_of(model: ForwardModel) -> VoxelSpace:
    dom = model.geometry.domain
    return VoxelSpace.from_extent(model.grid.shape, dom.width, dom.depth, dom.height)


def ring_plane(model: ForwardModel) -> int:
    """The grid plane holding the electrodes' mean height."""
    return space_of(model).plane_of(float(np.mean(model.geometry.electrode_z)))


def heart_region(model: ForwardModel) -> np.ndarray:
    """(P, R, C) bool: the phantom's heart on the model's grid."""
    heart = np.zeros(model.grid.shape, dtype=bool)
    heart[model.mask] = thorax_phantom(model.geometry).heart(voxel_centres(model))
    return heart


def image_checks(tidal: np.ndarray, model: ForwardModel, lung: np.ndarray | None = None,
                 position: str = "supine") -> dict[str, float]:
    """Plausibility of one tidal image (P, R, C; impedance, ventilation positive); the
    dependent share is along gravity for the patient's `position`."""
    mask = model.mask
    positive = np.where(mask, np.clip(tidal, 0.0, None), 0.0)
    negative = np.where(mask, np.clip(-tidal, 0.0, None), 0.0)
    columns = tidal.shape[2]
    right, left = positive[..., : columns // 2].sum(), positive[..., columns // 2:].sum()
    plane = ring_plane(model)
    ventilated = positive[plane] >= VENTILATED * positive[plane].max()
    labels, count = ndimage.label(ventilated)
    sizes = np.bincount(labels.ravel())[1:]
    regions = int((sizes >= 0.1 * sizes.max()).sum()) if count else 0
    lungs = lung if lung is not None and lung.any() else positive >= VENTILATED * positive.max()
    heart = heart_region(model)
    dependent = regional(tidal, lungs, space_of(model), position=position).dependent_pct
    total = right + left
    return {"right_share": float(right / total), "left_share": float(left / total),
            "regions_in_ring_plane": regions,
            "heart_vs_lung": float(tidal[heart].mean() / tidal[lungs & ~heart].mean()),
            "opposite_vs_ventilation": float(negative.sum() / positive.sum()),
            "dependent_share": dependent / 100.0}


def rate_checks(analysis: Analysis) -> dict[str, Any]:
    summary = analysis.summary()
    return {"breaths": summary["breaths"],
            "respiratory_per_min": summary["respiratory_rate_per_min"],
            "spectral_respiratory_per_min": summary["spectral_respiratory_rate_per_min"],
            "heart_per_min": summary["heart_rate_per_min"]}


def tidal_of(volumes: np.ndarray, model: ForwardModel, starts: list[int],
             ends: list[int]) -> np.ndarray:
    """Mean over breaths of end-inspiration minus start, as impedance (-Δσ/σ0), (P, R, C)."""
    voxels = voxel_impedance(volumes, model.mask)
    return model.to_volume((voxels[ends] - voxels[starts]).mean(axis=0))


def breath_tidal(method: str, model: ForwardModel, rec: Recording, starts: list[int],
                 ends: list[int], options: dict[str, Any], device: str = "cpu",
                 progress: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
    """`method` on each breath's tidal difference (Δv at end-inspiration minus Δv at its
    start), in order (TPP from breath to breath): the mean of the breath images as impedance
    (P, R, C), and the iterations and seconds per breath."""
    tidal = (normalise(rec.voltages[ends], rec.reference)
             - normalise(rec.voltages[starts], rec.reference))
    recon = create(method, model, device=device, **options)
    results = [recon.push(d) for d in tqdm(tidal, desc=f"{method} (tidal)", unit="breath",
                                           disable=not progress)]
    image = model.to_volume(-np.stack([r.volume[model.mask] for r in results]).mean(axis=0))
    return image, {"breaths_used": len(starts), "options": options,
                   "iterations": [int(r.iterations) for r in results],
                   "seconds": [round(r.milliseconds / 1000, 2) for r in results],
                   "first_image_s": round(results[0].milliseconds / 1000, 2)}


def run_recording(entry: RealRecording, data_dir: Path, geometry: Any, grid: Any,
                  exclude: int, tv_breaths: int, d2ip_breaths: int = 0,
                  d2ip_options: dict[str, Any] | None = None, progress: bool = False
                  ) -> tuple[dict[str, Any], dict[str, np.ndarray], ForwardModel]:
    """Every method's tidal image and checks on one recording; `geometry` "patient" is the
    recording's own thorax (`patient_geometry` of its patient and the Göttingen belt)."""
    if geometry == PATIENT:
        geometry = patient_geometry(entry.patient, BELT).model_dump(mode="json")
    rec, _ = read_recording(data_dir / entry.path, "get", geometry=geometry, grid=grid)
    model = load_model(**{k: rec.meta[k] for k in ("geometry", "protocol", "grid")},
                       progress=progress)
    settings = AnalysisSettings(subject=entry.subject, position=entry.position)
    space = space_of(model)
    result: dict[str, Any] = {"recording": entry.name, "frames": rec.n_frames,
                              "stated_respiratory_per_min": entry.stated_respiratory_per_min,
                              "stated_heart_per_min": entry.stated_heart_per_min,
                              "methods": {}}
    images: dict[str, np.ndarray] = {}
    breaths = None
    for name in LINEAR:
        volumes, _ = reconstruct_recording(create(name, model), rec.voltages, rec.reference,
                                           progress=progress)
        analysis = analyse(volumes, rec.frame_times, model.mask, space, settings=settings)
        if not analysis.breaths:
            raise ValueError(f"{entry.name}: {name} found no breath")
        starts = [b.breath.start for b in analysis.breaths]
        ends = [b.breath.end_inspiration for b in analysis.breaths]
        breaths = breaths or (starts, ends)
        images[name] = tidal_of(volumes, model, starts, ends)
        excluded = exclusion_check(rec, model, name, exclude, images[name], starts, ends)
        result["methods"][name] = {**rate_checks(analysis),
                                   **image_checks(images[name], model, analysis.lung_mask,
                                                  entry.position),
                                   "exclusion": excluded}
    starts, ends = (b[:tv_breaths] for b in breaths)
    order = sorted(set(starts) | set(ends))
    volumes, _ = reconstruct_recording(create("tv", model), rec.voltages[order], rec.reference,
                                       progress=progress)
    position = {frame: k for k, frame in enumerate(order)}
    images["tv"] = tidal_of(volumes, model, [position[s] for s in starts],
                            [position[e] for e in ends])
    result["methods"]["tv"] = {"breaths_used": len(starts),
                               **image_checks(images["tv"], model, position=entry.position)}
    if d2ip_breaths:
        starts, ends = (b[:d2ip_breaths] for b in breaths)
        images[DEEP], cost = breath_tidal(DEEP, model, rec, starts, ends,
                                          REAL_OPTIONS if d2ip_options is None else d2ip_options,
                                          progress=progress)
        inside = model.mask
        result["methods"][DEEP] = {
            **cost, **image_checks(images[DEEP], model, position=entry.position),
            "cc_with": {name: cc(images[DEEP][inside], images[name][inside])
                        for name in (*LINEAR, "tv")}}
    return result, images, model


def exclusion_check(rec: Recording, model: ForwardModel, method: str, electrode: int,
                    tidal: np.ndarray, starts: list[int], ends: list[int]) -> dict[str, Any]:
    """The tidal image with `electrode` (0-based, model numbering) excluded, against `tidal`."""
    frames = sorted(set(starts) | set(ends))
    variant = weighted_model(model, DataWeighting(exclude=(electrode,)))
    recon = create(method, variant)
    volumes = np.zeros((rec.n_frames, *model.grid.shape), dtype=np.float32)
    dv = normalise(rec.voltages[frames], rec.reference)
    volumes[frames] = np.stack([r.volume for r in recon.push_many(dv)])
    masked = tidal_of(volumes, model, starts, ends)
    inside = model.mask
    return {"electrode": electrode + 1, "cc": cc(masked[inside], tidal[inside]),
            "err": err(masked[inside], tidal[inside])}


def figure(images: dict[str, dict[str, np.ndarray]], models: dict[str, ForwardModel],
           out_path: Path) -> None:
    """Tidal images: one row per method, the ring plane and the planes 2 above and below,
    for each recording; each image scaled to its own largest magnitude; attribution below."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(images)
    methods = list(next(iter(images.values())))
    fig = Figure(figsize=(3.0 * 3 * len(names), 2.6 * len(methods) + 1.6), dpi=100,
                 layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(methods), 3 * len(names), squeeze=False)
    for col_block, name in enumerate(names):
        model = models[name]
        plane = ring_plane(model)
        planes = [p for p in (plane - 2, plane, plane + 2) if 0 <= p < model.grid.planes]
        _, dy, dx = space_of(model).spacing  # voxels are not square: draw true proportions
        for row, method in enumerate(methods):
            image = images[name][method]
            limit = float(np.abs(image[model.mask]).max()) or 1.0
            for k, p in enumerate(planes):
                ax = axes[row, 3 * col_block + k]
                ax.imshow(np.ma.array(image[p], mask=~model.mask[p]), cmap="RdBu_r",
                          vmin=-limit, vmax=limit, interpolation="nearest", aspect=dy / dx)
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_title(f"{name} {method}, plane {p}" + (" (ring)" if p == plane else ""),
                             fontsize=8)
    text = ("Tidal images (impedance change, red = ventilation; each scaled to its largest "
            "magnitude); anterior up, patient's right on the left. " + " ".join(
                e.attribution for e in RECORDINGS if e.name in names) + " " + LICENSE)
    fig.supxlabel("\n".join(textwrap.wrap(text, 180)), fontsize=7)
    fig.savefig(out_path)


def benchmark(data_dir: Path, out_dir: Path, geometry: Any = PATIENT, grid: Any = None,
              exclude: int = 3, tv_breaths: int = 4, d2ip_breaths: int = 8,
              d2ip_options: dict[str, Any] | None = None,
              names: tuple[str, ...] | None = None, progress: bool = False) -> dict[str, Any]:
    """Run every recording; write realdata.json, realdata.png and the tidal images
    (realdata-tidal.npz, "<recording>-<method>") into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    results, images, models = [], {}, {}
    for entry in RECORDINGS:
        if names is not None and entry.name not in names:
            continue
        result, images[entry.name], models[entry.name] = run_recording(
            entry, data_dir, geometry, grid, exclude, tv_breaths, d2ip_breaths, d2ip_options,
            progress)
        results.append(result)
    figure(images, models, out_dir / "realdata.png")
    np.savez_compressed(out_dir / "realdata-tidal.npz", **{
        f"{name}-{method}": image for name, by_method in images.items()
        for method, image in by_method.items()})
    report = {"date": time.strftime("%Y-%m-%d", time.gmtime()), "geometry": geometry,
              "grid": list(next(iter(models.values())).grid.shape),
              "seconds": round(time.perf_counter() - t0, 1), "recordings": results,
              "attribution": [e.attribution for e in RECORDINGS], "license": LICENSE}
    (out_dir / "realdata.json").write_text(json.dumps(report, indent=2))
    return report
