"""What a session may ask of a worker: the bounds the API enforces when a session is created.

The specs (`geometry`, `protocol`, `grid`) describe any model the offline engine can build,
finer simulation meshes included; these limits bound only what the API accepts, so that one
request can neither stall the API (building a protocol of n electrodes costs n^3) nor make a
worker build a model that takes minutes and gigabytes (docs/service-api.md, "Limits"):

- `mesh_size` at least 4 mm, and the model's estimated nodes (`estimated_nodes`) at most
  120 000: the default thorax at 9 mm has 25 028 nodes and builds in about 25 s; the build
  time grows with the nodes, its sparse factorisation faster than that.
- the domain's width, depth and height between 5 cm and 1 m (adult thoraces and saline tanks).
- at most 64 electrodes (belts have 16 or 32) and 4096 measurements (64 x 64); an explicit
  protocol lists at most 1024 injections and 1024 measurements (its JSON is validated entry
  by entry: 1024 take about 15 ms).
- at most 256 voxels per grid axis and 64^3 voxels.
- the model's estimated build memory (`estimated_bytes`) at most 3 GiB: the dense Jacobian
  (M x voxels), the per-element field gradients of the injections and measurement patterns,
  and the sparse factorisation.

An explicit reference frame needs an rms of at least `MIN_REFERENCE_RMS_V` (1 µV; belts
measure millivolts): frames are normalised by it (`worker.recon.base.normalise`), and an
all-zero reference would make every volume NaN.

Torch- and gmsh-free; the estimates take microseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from service.contract.geometry import GeometrySpec
from service.contract.grid import GridSpec
from service.contract.protocol import AnyProtocol, ExplicitProtocol, Protocol

# Nodes of a gmsh mesh of mesh size h: NODES_PER_VOLUME V/h^3 + NODES_PER_AREA S/h^2 (volume V,
# surface S; the surface term is the refinement at the electrodes and boundary), fitted to the
# default thorax (2 x 16 electrodes) at 9 mm (25 028 nodes) and 16 mm (6 524 nodes).
NODES_PER_VOLUME = 0.58
NODES_PER_AREA = 4.0
ELEMENTS_PER_NODE = 5.2  # tetrahedra per node of those meshes
FACTOR_BYTES_PER_NODE = 10_000  # the sparse LU of the complete electrode model, generously
JACOBIAN_CHUNK = 64  # measurements per chunk of `worker.forward.jacobian`


MIN_REFERENCE_RMS_V = 1e-6


def reference_problem(voltages: np.ndarray) -> str | None:
    """Why these voltages cannot be a reference (all zero or nearly), or None."""
    rms = float(np.sqrt(np.mean(np.square(voltages, dtype=np.float64))))
    if rms < MIN_REFERENCE_RMS_V:
        return (f"the reference's rms is {rms:.3g} V; at least {MIN_REFERENCE_RMS_V:g} V (frames "
                f"are normalised by it)")
    return None


class LimitExceeded(ValueError):
    """A spec is valid but beyond what a session may ask for; `field` names the setting."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class SessionLimits:
    """The bounds of a session's geometry, protocol and grid (see the module docstring)."""

    min_mesh_size: float = 0.004
    min_extent: float = 0.05
    max_extent: float = 1.0
    max_electrodes: int = 64
    max_measurements: int = 4096
    max_explicit_entries: int = 1024
    max_grid_axis: int = 256
    max_voxels: int = 64**3
    max_nodes: int = 120_000
    max_bytes: int = 3 * 2**30

    def check_geometry(self, geometry: GeometrySpec) -> None:
        """Mesh size, domain extent and electrode count; LimitExceeded naming the field."""
        if geometry.mesh_size < self.min_mesh_size:
            raise LimitExceeded("geometry.mesh_size", f"at least {self.min_mesh_size} m")
        dom = geometry.domain
        for name, value in (("width", dom.width), ("depth", dom.depth), ("height", dom.height)):
            if not self.min_extent <= value <= self.max_extent:
                field = "radius" if dom.kind == "cylinder" and name != "height" else name
                raise LimitExceeded(f"geometry.domain.{field}",
                                    f"the domain's {name} must lie between {self.min_extent} "
                                    f"and {self.max_extent} m")
        if geometry.electrodes.count > self.max_electrodes:
            raise LimitExceeded("geometry.electrodes.per_ring",
                                f"at most {self.max_electrodes} electrodes in all")

    def check_protocol(self, protocol: AnyProtocol) -> None:
        """The size of an explicit protocol, before it is built."""
        if isinstance(protocol, ExplicitProtocol):
            for name in ("injections", "measurements"):
                if len(getattr(protocol, name)) > self.max_explicit_entries:
                    raise LimitExceeded(f"protocol.{name}",
                                        f"at most {self.max_explicit_entries} {name}")

    def check_grid(self, grid: GridSpec) -> None:
        if max(grid.shape) > self.max_grid_axis or math.prod(grid.shape) > self.max_voxels:
            raise LimitExceeded("grid", f"at most {self.max_grid_axis} per axis and "
                                        f"{self.max_voxels} voxels")

    def check_model(self, geometry: GeometrySpec, protocol: Protocol, grid: GridSpec) -> None:
        """The model's measurements, estimated nodes and build memory."""
        n_measurements = protocol.n_measurements
        if n_measurements > self.max_measurements:
            raise LimitExceeded("protocol", f"{n_measurements} measurements; at most "
                                            f"{self.max_measurements}")
        nodes = estimated_nodes(geometry)
        if nodes > self.max_nodes:
            raise LimitExceeded("geometry.mesh_size",
                                f"about {nodes:.0f} mesh nodes; at most {self.max_nodes} "
                                f"(a larger mesh size or a smaller domain)")
        size = estimated_bytes(geometry, protocol, grid)
        if size > self.max_bytes:
            raise LimitExceeded("grid", f"the model needs about {size / 2**30:.1f} GiB to "
                                        f"build; at most {self.max_bytes / 2**30:.1f} GiB "
                                        f"(fewer voxels, measurements or mesh nodes)")


def estimated_nodes(geometry: GeometrySpec) -> float:
    """About how many nodes `worker.forward.mesh.build_mesh` makes for this geometry."""
    dom, h = geometry.domain, geometry.mesh_size
    outline = dom.outline(256)
    x, y = outline[:, 0], outline[:, 1]
    area = 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))
    perimeter = float(np.linalg.norm(np.diff(np.vstack([outline, outline[:1]]), axis=0),
                                     axis=1).sum())
    volume, surface = area * dom.height, perimeter * dom.height + 2 * area
    return NODES_PER_VOLUME * volume / h**3 + NODES_PER_AREA * surface / h**2


def estimated_bytes(geometry: GeometrySpec, protocol: Protocol, grid: GridSpec) -> float:
    """About the peak memory of a cold model build: the sparse factorisation, the element
    gradients of every basis solution, injection and distinct measurement pattern, one chunk
    of the element Jacobian, and the voxel Jacobian."""
    nodes = estimated_nodes(geometry)
    elements = ELEMENTS_PER_NODE * nodes
    patterns = (geometry.electrodes.count + protocol.currents.shape[0]
                + len({row.tobytes() for row in protocol.meas_weights}))
    return (FACTOR_BYTES_PER_NODE * nodes
            + 8 * elements * 3 * (patterns + JACOBIAN_CHUNK)
            + 8 * protocol.n_measurements * math.prod(grid.shape))
