"""Simulate a case into a `Recording`: fine-mesh CEM voltages, noise, and the voxel truth.

No inverse crime: voltages come from a mesh 0.75 times the size of the reconstruction mesh
(`geometry.mesh_size`), built separately; element conductivities are the phantom averaged
over 8 points per tetrahedron. The truth is Δσ/σ0 against the case's reference, the phantom
averaged over 3 x 3 x 3 points per voxel and masked: the sign convention of the Jacobian's
unknowns (σ0 the background conductivity).

Cost: the deep-breath and edema cases solve every frame directly. `tidal-breathing` (1200
frames for a minute) instead solves the lung state u on a grid of `TIDAL_NODES` values with
the heart at background, plus two solves for the heart's ±3 % pulse at mid breath, and
interpolates: voltages(u, c) = cubic spline in u + c · ∂v/∂c. The truth is interpolated
linearly in u the same way. `interpolation_error` measures this against direct solves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.interpolate import CubicSpline
from tqdm import tqdm

from service.contract.geometry import GeometrySpec, resolve_geometry
from service.contract.grid import GridSpec, resolve_grid, voxel_edges
from service.contract.protocol import Protocol, resolve_protocol
from worker.forward.fem import CEM, measure
from worker.forward.mesh import Mesh, build_mesh
from worker.forward.model import model_spec
from worker.forward.voxel import barycentric_samples, domain_mask
from worker.recording import Recording
from worker.simulation.cases import TANK_CASES, Timeline, tidal_state, timeline
from worker.simulation.faults import ElectrodeFault, apply_faults
from worker.simulation.noise import add_noise
from worker.simulation.phantom import BreathState, Phantom, thorax_phantom
from worker.simulation.tank import TankPhantom, tank_phantom

SIM_MESH_FACTOR = 0.75
TIDAL_NODES = 13
TIDAL_U_MAX = 1.45


@dataclass
class Simulator:
    """The fine-mesh forward solver, the phantom and the voxel sampler for one setup."""

    geometry: GeometrySpec
    protocol: Protocol
    grid: GridSpec
    phantom: Phantom | TankPhantom
    mesh: Mesh
    cem: CEM
    mask: np.ndarray
    progress: bool = False

    @classmethod
    def create(cls, geometry: GeometrySpec, protocol: Protocol, grid: GridSpec,
               edema: bool, progress: bool = False,
               phantom: Phantom | TankPhantom | None = None) -> Simulator:
        """The simulator of the thorax phantom (with or without edema), or of `phantom`."""
        mesh = build_mesh(geometry, size=geometry.mesh_size * SIM_MESH_FACTOR)
        phantom = thorax_phantom(geometry, edema=edema) if phantom is None else phantom
        return cls(geometry, protocol, grid, phantom, mesh,
                   CEM(mesh, geometry.electrodes.contact_impedance),
                   domain_mask(geometry, grid), progress)

    def voltages(self, states: list[BreathState]) -> np.ndarray:
        """Direct fine-mesh solves: T x M voltages."""
        pts = np.einsum("sk,ekd->esd", barycentric_samples(8), self.mesh.nodes[self.mesh.tets])
        flat = pts.reshape(-1, 3)
        out = []
        for st in tqdm(states, desc="simulate", unit="solve", disable=not self.progress):
            sigma = self.phantom.conductivity(flat, st).reshape(pts.shape[:2]).mean(axis=1)
            out.append(self._measure(sigma))
        return np.array(out)

    def _measure(self, sigma: np.ndarray) -> np.ndarray:
        """M voltages for per-element conductivities on the fine mesh."""
        sol = self.cem.solve(sigma)
        return measure(sol, self.geometry.current_amplitude * self.protocol.currents,
                       self.protocol.meas_injection, self.protocol.meas_weights)

    def homogeneous_voltages(self) -> np.ndarray:
        """M voltages of the empty domain (background conductivity everywhere)."""
        return self._measure(np.full(self.mesh.n_elements,
                                     self.geometry.background_conductivity))

    def voxel_conductivity(self, states: list[BreathState]) -> np.ndarray:
        """T x V phantom conductivity averaged over 3 x 3 x 3 points per masked voxel."""
        pts = voxel_points(self.geometry, self.grid)
        return np.array([voxel_average(self.phantom.conductivity(pts, st), self.grid)[self.mask]
                         for st in states])


def voxel_points(geometry: GeometrySpec, grid: GridSpec, samples: int = 3) -> np.ndarray:
    """(P s R s C s) x 3 points, `samples`^3 per voxel of `grid` over the geometry's domain,
    in the order `voxel_average` expects."""
    dom = geometry.domain
    edges = voxel_edges(grid, dom.width, dom.depth, dom.height)
    sub = [(e[:-1, None] + np.diff(e)[:, None] * (np.arange(samples) + 0.5) / samples)
           for e in edges]
    zz, yy, xx = np.meshgrid(*[s.ravel() for s in sub], indexing="ij")
    return np.column_stack([xx.ravel(), yy.ravel(), zz.ravel()])


def voxel_average(values: np.ndarray, grid: GridSpec) -> np.ndarray:
    """Per-voxel means (P, R, C) of values at `voxel_points(..., samples)`."""
    samples = round((values.size / (grid.planes * grid.rows * grid.cols)) ** (1 / 3))
    shape = (grid.planes, samples, grid.rows, samples, grid.cols, samples)
    return values.reshape(shape).mean(axis=(1, 3, 5))


def interpolation_error(sim: Simulator, u: np.ndarray, cardiac: np.ndarray) -> float:
    """Worst relative error, over the given states, of the tidal interpolation against direct
    solves, measured on the voltage change from the u = 0 state."""
    states = [tidal_state(a, c, sim.geometry.background_conductivity)
              for a, c in zip(u, cardiac, strict=True)]
    direct = sim.voltages(states)
    interp = _tidal_interpolator(sim)(u, cardiac)[0]
    base = sim.voltages([tidal_state(0.0, 0.0, sim.geometry.background_conductivity)])[0]
    return float(max(np.linalg.norm(i - d) / np.linalg.norm(d - base)
                     for i, d in zip(interp, direct, strict=True)))


def _tidal_interpolator(sim: Simulator, with_truth: bool = False):
    bg = sim.geometry.background_conductivity
    nodes = np.linspace(0.0, TIDAL_U_MAX, TIDAL_NODES)
    states = [tidal_state(u, 0.0, bg) for u in nodes]
    pulse = [tidal_state(0.5, c, bg) for c in (-0.03, 0.03)]
    volts = sim.voltages(states + pulse)
    spline = CubicSpline(nodes, volts[:TIDAL_NODES], axis=0)
    dv_dc = (volts[-1] - volts[-2]) / 0.06
    truth_nodes = sim.voxel_conductivity(states + pulse) if with_truth else None

    def at(u: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        u = np.clip(u, 0.0, TIDAL_U_MAX)
        v = spline(u) + c[:, None] * dv_dc
        if truth_nodes is None:
            return v, None
        idx = np.clip(np.searchsorted(nodes, u, side="right") - 1, 0, TIDAL_NODES - 2)
        f = ((u - nodes[idx]) / (nodes[1] - nodes[0]))[:, None]
        sig = (1 - f) * truth_nodes[idx] + f * truth_nodes[idx + 1]
        sig += c[:, None] * (truth_nodes[-1] - truth_nodes[-2]) / 0.06
        return v, sig

    return at


def simulate(case: str, snr_db: float | None = 50.0, frames: int | None = None,
             duration: float = 60.0, seed: int = 0, geometry: Any = None, protocol: Any = None,
             grid: Any = None, with_truth: bool = True, progress: bool = False,
             faults: list[ElectrodeFault] | None = None) -> Recording:
    """Simulate `case` and return the recording (voltages, reference, times, truth, mask);
    `faults` breaks or drifts electrodes (`worker.simulation.faults`) after the noise."""
    g, p_spec, gr = resolve_geometry(geometry), resolve_protocol(protocol), resolve_grid(grid)
    tl = timeline(case, g.background_conductivity, frames, duration, seed)
    phantom = tank_phantom(g) if case in TANK_CASES else None
    sim = Simulator.create(g, p_spec.build(g.electrodes.count), gr, tl.edema, progress, phantom)
    rng = np.random.default_rng(seed)
    if case == "tidal-breathing":
        clean, sigma = _tidal_interpolator(sim, with_truth)(tl.lung_state, tl.cardiac)
    else:
        clean = sim.voltages(tl.states)
        sigma = sim.voxel_conductivity(tl.states) if with_truth else None
    empty = None
    if tl.reference == "empty":
        empty = sim.homogeneous_voltages()
    volts, scale = add_noise(clean, snr_db, rng)
    if faults:
        volts, empty = apply_faults(volts, empty, tl.times, sim.protocol, faults, rng)
    reference, sigma_ref, keep = _reference(tl, volts, sigma, empty, scale, snr_db, rng,
                                            g.background_conductivity)
    truth = None
    if sigma is not None:
        delta = (sigma[keep] - sigma_ref) / g.background_conductivity
        truth = np.zeros((delta.shape[0], *gr.shape), dtype=np.float32)
        truth[:, sim.mask] = delta
    meta = {**model_spec(g, p_spec, gr), "case": case, "snr_db": snr_db, "seed": seed,
            "reference": tl.reference, "sim_mesh_size": g.mesh_size * SIM_MESH_FACTOR,
            "sim_nodes": sim.mesh.n_nodes, "frame_rate": 1.0 / float(np.diff(tl.times[:2])[0])
            if tl.times.size > 1 else None}
    if faults:
        meta["faults"] = [{"electrode": f.electrode, "kind": f.kind} for f in faults]
    times = tl.times[keep]
    return Recording(voltages=volts[keep], reference=reference, frame_times=times,
                     mask=sim.mask, meta=meta, truth=truth)


def _reference(tl: Timeline, volts: np.ndarray, sigma: np.ndarray | None,
               empty: np.ndarray | None, scale: float, snr_db: float | None,
               rng: np.random.Generator, background: float
               ) -> tuple[np.ndarray, np.ndarray | float, slice]:
    """Reference voltages, reference voxel conductivity, and the frames kept."""
    if tl.reference == "empty":
        noisy = empty + (rng.normal(0.0, scale, empty.shape) if snr_db is not None else 0.0)
        return noisy, background, slice(None)
    if tl.reference == "first":
        return volts[0], (sigma[0] if sigma is not None else 0.0), slice(1, None)
    ee = tl.end_expiration
    return (volts[ee].mean(axis=0), (sigma[ee].mean(axis=0) if sigma is not None else 0.0),
            slice(None))
