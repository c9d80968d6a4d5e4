"""The pretraining set of Educated DIP: pairs (Tikhonov preview, truth) of simulated thoraxes
(seed section IV, eq. 2: the network phi_theta(A^dagger y) learns x from A^dagger y).

A sample is one difference frame of a thorax drawn by `worker.simulation.varied.random_thorax`
(anatomy, breath, pathology, reference kind), its truth Delta sigma / sigma_0 on the model's
grid (the phantom averaged over `DataConfig.voxel_samples`^3 points per voxel), its normalised
voltage change Delta v, and the network's input: the Tikhonov preview R Delta v
(`worker.recon.tikhonov`, the same R the reconstructor uses) as a (P, R, C) volume.

- **Linearised samples** (most): Delta v = J x + noise, J the model's Jacobian; the noise is
  white on the voltages at an SNR drawn from `snr_db` (the definition of
  `worker.simulation.noise`), on both the frame and the reference, carried into the
  normalised units channel by channel.
- **Nonlinear samples** (`fem_samples`): complete-electrode-model solves on a mesh of their
  own (`FEM_MESH_SIZE`, another size than the model's, so no inverse crime), of geometries
  perturbed within `belt_shift` (both rings' heights, m), `ring_jitter` (each ring, m) and
  `thorax_scale` (width and depth, relative), with noise added to the voltages before
  `recon.base.normalise`. The truth is sampled on the model's grid.

Evaluation cases stay out: the draws use seed sequences tagged `DATA_TAG`, apart from the
cases' seeds, and a sample whose truth lies within `exclusion` (relative L2 distance) of any
frame of `healthy-deep-breath`, `edema-left` or `tidal-breathing` (`evaluation_truths`) is
redrawn; the count of redraws is kept in the dataset's meta.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from service.contract.geometry import GeometrySpec
from worker.forward.fem import CEM
from worker.forward.mesh import build_mesh
from worker.forward.model import ForwardModel
from worker.forward.operator import NORMALISE_FLOOR
from worker.recon.base import normalise
from worker.recon.tikhonov import tikhonov_operator
from worker.simulation.cases import THORAX_CASES, tidal_state, timeline
from worker.simulation.noise import add_noise
from worker.simulation.phantom import BreathState, thorax_phantom
from worker.simulation.simulate import Simulator, voxel_average, voxel_points
from worker.simulation.varied import VariedCase, random_thorax

DATA_TAG = 17_001  # first word of every training seed sequence (evaluation seeds are plain ints)
FEM_MESH_SIZE = 0.013  # m: the nonlinear samples' mesh (the model's default is 0.009)
TIDAL_TRUTH_STATES = 16  # lung states u in [0, max u] that stand for the tidal case's frames


@dataclass(frozen=True)
class DataConfig:
    """How many samples of each kind, their seed and variation (module docstring)."""

    samples: int = 1600  # linearised
    fem_samples: int = 16  # nonlinear, on `fem_geometries` perturbed geometries
    fem_geometries: int = 2
    seed: int = 0
    snr_db: tuple[float, float] = (35.0, 65.0)
    belt_shift: float = 0.01  # m, both rings
    ring_jitter: float = 0.003  # m, each ring
    thorax_scale: float = 0.08  # relative, width and depth
    exclusion: float = 0.35  # relative L2 distance to every evaluation frame
    voxel_samples: int = 1  # points per voxel axis (1: voxel centres, 16x cheaper than 2)

    def __post_init__(self) -> None:
        if self.samples < 2 or self.fem_samples < 0 or self.fem_geometries < 1:
            raise ValueError(f"data: need samples >= 2, fem_samples >= 0, geometries >= 1: {self}")


@dataclass
class Dataset:
    """Network inputs (N, V) (the preview inside the mask), targets (N, V), kinds and meta."""

    inputs: np.ndarray
    targets: np.ndarray
    nonlinear: np.ndarray  # (N,) bool
    meta: dict[str, Any]


def _truth(case: VariedCase, pts: np.ndarray, model: ForwardModel) -> np.ndarray:
    """Delta sigma / sigma_0 inside the mask of the model's grid."""
    bg = case.phantom.background

    def values(state: BreathState) -> np.ndarray:
        return voxel_average(case.phantom.conductivity(pts, state), model.grid)[model.mask]

    ref = bg if case.empty else values(case.reference)
    return (values(case.frame) - ref) / bg


def evaluation_truths(model: ForwardModel, samples: int = 1) -> np.ndarray:
    """(K, V) truths standing for every frame of the evaluation cases (with their phantoms and
    references): the deep breath and edema frames, and the tidal case at `TIDAL_TRUTH_STATES`
    lung states against u = 0 (its end-expiration reference; the heart at background)."""
    g = model.geometry
    bg = g.background_conductivity
    pts = voxel_points(g, model.grid, samples)
    out = []
    for name in THORAX_CASES:
        tl = timeline(name, bg, duration=60.0, seed=0)
        phantom = thorax_phantom(g, edema=tl.edema)

        def values(state: BreathState, phantom: Any = phantom) -> np.ndarray:
            return voxel_average(phantom.conductivity(pts, state), model.grid)[model.mask]

        if tl.reference == "empty":
            out += [(values(s) - bg) / bg for s in tl.states]
        elif tl.reference == "first":
            ref = values(tl.states[0])
            out += [(values(s) - ref) / bg for s in tl.states[1:]]
        else:
            ref = values(tidal_state(0.0, 0.0, bg))
            us = np.linspace(0.0, float(tl.lung_state.max()), TIDAL_TRUTH_STATES)[1:]
            out += [(values(tidal_state(u, 0.0, bg)) - ref) / bg for u in us]
    return np.array(out)


def nearest_distance(truth: np.ndarray, evaluation: np.ndarray) -> float:
    """min over the evaluation frames e of ||truth - e|| / ||e||."""
    norms = np.linalg.norm(evaluation, axis=1)
    return float(np.min(np.linalg.norm(evaluation - truth, axis=1) / np.maximum(norms, 1e-12)))


def noise_gain(model: ForwardModel) -> np.ndarray:
    """Per channel, white voltage noise of s.d. rms(v0) in normalised units (the divisor of
    `recon.base.normalise`)."""
    v0 = model.reference_voltages
    rms = float(np.sqrt(np.mean(v0**2)))
    return rms / np.maximum(np.abs(v0), NORMALISE_FLOOR * rms)


class _Drawer:
    """Draws thoraxes for one geometry, redrawing those too close to an evaluation frame."""

    def __init__(self, model: ForwardModel, config: DataConfig, evaluation: np.ndarray) -> None:
        self.model, self.config, self.evaluation = model, config, evaluation
        self.pts = voxel_points(model.geometry, model.grid, config.voxel_samples)
        self.redrawn = 0

    def draw(self, geometry: GeometrySpec, rng: np.random.Generator
             ) -> tuple[VariedCase, np.ndarray]:
        while True:
            case = random_thorax(geometry, rng)
            truth = _truth(case, self.pts, self.model)
            if nearest_distance(truth, self.evaluation) >= self.config.exclusion:
                return case, truth
            self.redrawn += 1


def perturbed_geometry(geometry: GeometrySpec, config: DataConfig,
                       rng: np.random.Generator) -> GeometrySpec:
    """The model's geometry with the belt shifted and the thorax scaled (`DataConfig`) and the
    nonlinear samples' mesh size."""
    dom, el = geometry.domain, geometry.electrodes
    shift = rng.uniform(-config.belt_shift, config.belt_shift)
    rings = tuple(float(z + shift + rng.uniform(-config.ring_jitter, config.ring_jitter))
                  for z in el.ring_heights)
    lo = el.height / 2
    rings = tuple(float(np.clip(z, lo, dom.height - lo)) for z in rings)
    scale = 1 + rng.uniform(-config.thorax_scale, config.thorax_scale, 2)
    domain = (dom.model_copy(update={"width": dom.width * scale[0],
                                     "depth": dom.depth * scale[1]}) if dom.kind == "thorax"
              else dom.model_copy(update={"radius": dom.radius * scale[0]}))
    return geometry.model_copy(update={"domain": domain,
                                       "electrodes": el.model_copy(
                                           update={"ring_heights": rings}),
                                       "mesh_size": FEM_MESH_SIZE})


def build_dataset(model: ForwardModel, config: DataConfig | None = None,
                  progress: bool = False) -> Dataset:
    """The pretraining set of `config` for `model` (module docstring)."""
    cfg = config or DataConfig()
    matrix = tikhonov_operator(model).matrix  # R (V, M): the reconstructor's preview
    jacobian = model.jacobian.astype(np.float32)
    gain = noise_gain(model)
    drawer = _Drawer(model, cfg, evaluation_truths(model, cfg.voxel_samples))
    total = cfg.samples + cfg.fem_samples
    inputs = np.empty((total, model.n_voxels), np.float32)
    targets = np.empty((total, model.n_voxels), np.float32)
    with tqdm(total=total, desc="pretraining set", unit="sample", disable=not progress,
              mininterval=2.0) as bar:
        for i in range(cfg.samples):
            rng = np.random.default_rng([DATA_TAG, cfg.seed, 0, i])
            _, truth = drawer.draw(model.geometry, rng)
            eta = 10 ** (-rng.uniform(*cfg.snr_db) / 20)
            dv = jacobian @ truth + eta * np.sqrt(2.0) * gain * rng.standard_normal(gain.size)
            inputs[i], targets[i] = matrix @ dv.astype(np.float32), truth
            bar.update()
        i = cfg.samples
        for g in range(cfg.fem_geometries):
            count = (cfg.fem_samples * (g + 1)) // cfg.fem_geometries - (i - cfg.samples)
            if count <= 0:
                continue
            rng = np.random.default_rng([DATA_TAG, cfg.seed, 1, g])
            geometry = perturbed_geometry(model.geometry, cfg, rng)
            mesh = build_mesh(geometry, size=geometry.mesh_size)
            sim = Simulator(geometry, model.protocol, model.grid, thorax_phantom(geometry), mesh,
                            CEM(mesh, geometry.electrodes.contact_impedance), model.mask)
            empty = sim.voltages([BreathState(1.0, geometry.background_conductivity,
                                              geometry.background_conductivity)])[0]
            for _ in range(count):
                case, truth = drawer.draw(geometry, rng)
                sim = dataclasses.replace(sim, phantom=case.phantom)
                frame, ref = (sim.voltages([case.frame])[0], empty) if case.empty else \
                    sim.voltages([case.frame, case.reference])
                snr = rng.uniform(*cfg.snr_db)
                noisy, _ = add_noise(np.stack([frame, ref]), snr, rng)
                dv = normalise(noisy[:1], noisy[1])[0]
                inputs[i], targets[i] = matrix @ dv.astype(np.float32), truth
                i += 1
                bar.update()
    nonlinear = np.arange(total) >= cfg.samples
    return Dataset(inputs[:i], targets[:i], nonlinear[:i],
                   {"config": asdict(cfg), "redrawn": drawer.redrawn,
                    "fem_mesh_size": FEM_MESH_SIZE, "samples": int(i)})
