"""The forward model researchers and the worker use: `load_model(geometry, protocol, grid)`.

A cold build meshes the domain, factorises the complete electrode model at the background
conductivity, solves every basis injection, and forms the normalised voxel Jacobian; the
result is cached on disk under a hash of every input (see `worker.forward.cache`).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from tqdm import tqdm

from service.contract.geometry import GeometrySpec, resolve_geometry
from service.contract.grid import GridSpec, resolve_grid
from service.contract.protocol import AnyProtocol, Protocol, resolve_protocol
from worker.forward import cache
from worker.forward.fem import CEM, Solution, measure
from worker.forward.jacobian import voxel_jacobian
from worker.forward.mesh import Mesh, build_mesh
from worker.forward.operator import JacobianOperator
from worker.forward.voxel import domain_mask, projection_matrix


@dataclass
class ForwardModel:
    """Linearised model V = J Σ (D2IP eq. 1) on the voxel grid, plus the nonlinear solver.

    - `jacobian`: M x V over the V voxels inside `mask` (C order of the (P, R, C) grid);
      rows are (v - v0)/|v0|, columns Δσ/σ0.
    - `reference_voltages`: M, at the background conductivity.
    - `solve(conductivity)`: M voltages for absolute voxel conductivities (P x R x C, S/m).
    - `operator`: the whitened Jacobian with its adjoint and singular system, built once.
    """

    geometry: GeometrySpec
    protocol_spec: AnyProtocol
    grid: GridSpec
    mesh: Mesh
    projection: sp.csr_matrix
    mask: np.ndarray
    jacobian: np.ndarray
    reference_voltages: np.ndarray
    build_seconds: float = 0.0
    cache_path: Path | None = None
    from_cache: bool = False
    _cem: CEM | None = field(default=None, repr=False)
    _operator: JacobianOperator | None = field(default=None, repr=False)
    _mask_index: np.ndarray | None = field(default=None, repr=False)  # flat indices of `mask`

    @property
    def protocol(self) -> Protocol:
        return self.protocol_spec.build(self.geometry.electrodes.count)

    @property
    def n_measurements(self) -> int:
        return int(self.jacobian.shape[0])

    @property
    def n_voxels(self) -> int:
        return int(self.jacobian.shape[1])

    @property
    def spec(self) -> dict[str, Any]:
        """JSON-serialisable; `load_model(**model.spec)` rebuilds this model."""
        return model_spec(self.geometry, self.protocol_spec, self.grid)

    @property
    def cem(self) -> CEM:
        if self._cem is None:
            self._cem = CEM(self.mesh, self.geometry.electrodes.contact_impedance)
        return self._cem

    @property
    def operator(self) -> JacobianOperator:
        """The whitened Jacobian A = W^½ J shared by every method (`worker.forward.operator`);
        its singular system is stored beside the model's cache file."""
        if self._operator is None:
            path = (cache.operator_path(self.cache_path) if self.cache_path is not None
                    else None)
            self._operator = JacobianOperator.from_reference(self.jacobian,
                                                             self.reference_voltages, path)
        return self._operator

    def with_weights(self, weights: np.ndarray) -> ForwardModel:
        """This model with other data weights on its operator (`JacobianOperator.with_weights`:
        excluded electrodes, noise estimated from the data); every method takes it as it is."""
        return dataclasses.replace(self, _operator=self.operator.with_weights(weights))

    def solve_elements(self, sigma: np.ndarray) -> np.ndarray:
        """M voltages for per-element conductivities (S/m)."""
        return self.voltages(self.cem.solve(sigma))

    def voltages(self, solution: Solution) -> np.ndarray:
        """The M measured voltages of a CEM solution under this model's protocol."""
        p = self.protocol
        return measure(solution, self.geometry.current_amplitude * p.currents, p.meas_injection,
                       p.meas_weights)

    def solve(self, conductivity: np.ndarray) -> np.ndarray:
        """M voltages for a P x R x C array of absolute conductivities (S/m)."""
        conductivity = np.asarray(conductivity, dtype=float)
        if conductivity.shape != self.grid.shape:
            raise ValueError(f"conductivity: expected shape {self.grid.shape}, "
                             f"got {conductivity.shape}")
        if not np.all(np.isfinite(conductivity)) or np.any(conductivity[self.mask] <= 0):
            raise ValueError("conductivity: values inside the mask must be finite and positive")
        return self.solve_elements(self.projection @ conductivity[self.mask])

    def to_volume(self, values: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """Scatter V masked values (or T x V) into (P, R, C) (or T x P x R x C) volumes."""
        values = np.asarray(values)
        if self._mask_index is None:  # flat indices: a third of boolean indexing's time
            self._mask_index = np.flatnonzero(self.mask)
        out = np.full(values.shape[:-1] + self.grid.shape, fill, dtype=values.dtype)
        out.reshape(values.shape[:-1] + (-1,))[..., self._mask_index] = values
        return out

    def summary(self) -> dict[str, Any]:
        return {
            "n_nodes": self.mesh.n_nodes,
            "n_elements": self.mesh.n_elements,
            "n_electrodes": self.geometry.electrodes.count,
            "n_measurements": self.n_measurements,
            "grid": list(self.grid.shape),
            "n_voxels_inside": self.n_voxels,
            "build_seconds": round(self.build_seconds, 3),
            "cache_path": str(self.cache_path) if self.cache_path else None,
            "from_cache": self.from_cache,
        }


def model_spec(geometry: GeometrySpec, protocol: AnyProtocol,
               grid: GridSpec) -> dict[str, Any]:
    return {"geometry": geometry.model_dump(mode="json"),
            "protocol": protocol.model_dump(mode="json"),
            "grid": grid.model_dump(mode="json")}


def build_model(geometry: GeometrySpec, protocol: AnyProtocol,
                grid: GridSpec, progress: bool = False) -> ForwardModel:
    """A cold build: mesh, factorisation and solves, Jacobian, projection."""
    t0 = time.perf_counter()
    built = protocol.build(geometry.electrodes.count)
    with tqdm(total=4, desc="forward model", disable=not progress) as bar:
        bar.set_postfix_str("mesh")
        mesh = build_mesh(geometry)
        bar.update()
        bar.set_postfix_str(f"CEM solve ({mesh.n_nodes} nodes)")
        cem = CEM(mesh, geometry.electrodes.contact_impedance)
        sigma = np.full(mesh.n_elements, geometry.background_conductivity)
        solution = cem.solve(sigma)
        amp = geometry.current_amplitude
        v0 = measure(solution, amp * built.currents, built.meas_injection, built.meas_weights)
        bar.update()
        bar.set_postfix_str("projection")
        mask = domain_mask(geometry, grid)
        proj = projection_matrix(geometry, grid, mesh.nodes, mesh.tets, mask)
        bar.update()
        bar.set_postfix_str("Jacobian")
        jac = voxel_jacobian(cem, solution, sigma, built, amp, v0, proj)
        bar.update()
    return ForwardModel(geometry=geometry, protocol_spec=protocol, grid=grid, mesh=mesh,
                        projection=proj, mask=mask, jacobian=jac, reference_voltages=v0,
                        build_seconds=time.perf_counter() - t0, _cem=cem)


def load_model(geometry: Any = None, protocol: Any = None, grid: Any = None, *,
               use_cache: bool = True, cache_dir: str | Path | None = None,
               progress: bool = False) -> ForwardModel:
    """The forward model for these specs (presets, files, dicts or spec objects), from the
    disk cache when present."""
    g, p, gr = resolve_geometry(geometry), resolve_protocol(protocol), resolve_grid(grid)
    p.build(g.electrodes.count)  # validates electrode indices against the geometry
    spec = model_spec(g, p, gr)
    path = cache.path_for(spec, cache_dir)
    if use_cache:
        t0 = time.perf_counter()
        arrays = cache.read(path)
        if arrays is not None:
            return ForwardModel(geometry=g, protocol_spec=p, grid=gr, **arrays,
                                build_seconds=time.perf_counter() - t0, cache_path=path,
                                from_cache=True)
    model = build_model(g, p, gr, progress=progress)
    if use_cache:
        cache.write(path, mesh=model.mesh, projection=model.projection, mask=model.mask,
                    jacobian=model.jacobian, reference_voltages=model.reference_voltages)
        model.cache_path = path
    return model
