"""Tetrahedral meshes of the domain with gmsh, refined at the electrodes.

One size parameter (the geometry's `mesh_size`, or an override) sets the element size in the
bulk; within one electrode width of an electrode the size falls linearly to a third of it.
gmsh runs single-threaded with a fixed algorithm, so the same spec gives the same mesh.
Electrodes are exact patches of the boundary: a box of the electrode's width and height,
oriented along the outward normal at the electrode's centre, is fragmented with the domain
(OpenCASCADE), the parts outside the body are dropped, and the boundary face each box cut out
of the side wall is that electrode's surface; the mesh conforms to the patch edges.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.path import Path as PolyPath

from service.contract.geometry import CylinderDomain, GeometrySpec, arc_coordinates

_OUTLINE_POINTS_CAD = 96
_OUTLINE_POINTS_DENSE = 4096
_REFINE = 3.0


@dataclass(frozen=True)
class Mesh:
    """P1 tetrahedral mesh. `electrodes[l]` holds the (F, 3) node triangles of electrode l."""

    nodes: np.ndarray  # N x 3, metres
    tets: np.ndarray  # E x 4, node indices
    electrodes: tuple[np.ndarray, ...]

    @property
    def n_nodes(self) -> int:
        return int(self.nodes.shape[0])

    @property
    def n_elements(self) -> int:
        return int(self.tets.shape[0])


class Outline:
    """A dense sampling of the domain's outline with arc-length lookup."""

    def __init__(self, spec: GeometrySpec) -> None:
        self.points = spec.domain.outline(_OUTLINE_POINTS_DENSE)
        self.arc = arc_coordinates(self.points)
        closed = np.vstack([self.points, self.points[:1]])
        self.perimeter = float(np.linalg.norm(np.diff(closed, axis=0), axis=1).sum())

    def point_at(self, arc: np.ndarray) -> np.ndarray:
        """(x, y) on the outline at the given arc lengths (linear interpolation)."""
        a = np.append(self.arc, self.perimeter)
        closed = np.vstack([self.points, self.points[:1]])
        s = np.mod(arc, self.perimeter)
        return np.column_stack([np.interp(s, a, closed[:, 0]), np.interp(s, a, closed[:, 1])])


def electrode_centres(spec: GeometrySpec, outline: Outline) -> np.ndarray:
    """L x 3 electrode centres in numbering order."""
    xy = outline.point_at(spec.electrode_arc)
    return np.column_stack([xy, spec.electrode_z])


def build_mesh(spec: GeometrySpec, size: float | None = None) -> Mesh:
    """Mesh the domain with gmsh and find the electrode triangles."""
    import gmsh

    h = float(size if size is not None else spec.mesh_size)
    outline = Outline(spec)
    centres = electrode_centres(spec, outline)
    el = spec.electrodes
    reach = max(el.width, el.height) / 2

    def size_at(dim: int, tag: int, x: float, y: float, z: float, lc: float) -> float:
        d = np.sqrt(((centres - (x, y, z)) ** 2).sum(axis=1)).min() - reach
        t = min(max(d / max(el.width, h), 0.0), 1.0)
        return h / _REFINE + (h - h / _REFINE) * t

    gmsh.initialize(interruptible=False)
    try:
        gmsh.option.setNumber("General.Terminal", 0)
        gmsh.option.setNumber("General.NumThreads", 1)
        gmsh.option.setNumber("Mesh.Algorithm", 6)
        gmsh.option.setNumber("Mesh.Algorithm3D", 1)
        gmsh.option.setNumber("Mesh.MeshSizeFromPoints", 0)
        gmsh.option.setNumber("Mesh.MeshSizeFromCurvature", 0)
        gmsh.option.setNumber("Mesh.MeshSizeExtendFromBoundary", 0)
        gmsh.option.setNumber("Mesh.RandomSeed", 1)
        gmsh.model.add("domain")
        faces = _build_cad(spec, outline, centres)
        gmsh.model.mesh.setSizeCallback(size_at)
        gmsh.model.mesh.generate(3)
        node_tags, coords, _ = gmsh.model.mesh.getNodes()
        _, tet_nodes = gmsh.model.mesh.getElementsByType(4)
        electrode_nodes = [gmsh.model.mesh.getElementsByType(2, tag)[1] for tag in faces]
    finally:
        gmsh.finalize()

    lookup = np.zeros(int(node_tags.max()) + 1, dtype=np.int64)
    lookup[node_tags.astype(np.int64)] = np.arange(node_tags.size)
    nodes = coords.reshape(-1, 3)
    tets = lookup[tet_nodes.astype(np.int64)].reshape(-1, 4)
    tris = [lookup[t.astype(np.int64)].reshape(-1, 3) for t in electrode_nodes]
    used = np.unique(tets)
    remap = -np.ones(nodes.shape[0], dtype=np.int64)
    remap[used] = np.arange(used.size)
    nodes, tets = nodes[used], _positively_oriented(nodes[used], remap[tets])
    return Mesh(nodes=nodes, tets=tets, electrodes=tuple(remap[t] for t in tris))


def _build_cad(spec: GeometrySpec, outline: Outline, centres: np.ndarray) -> list[int]:
    """Domain volume with electrode patches imprinted; returns each electrode's surface tag."""
    import gmsh

    occ = gmsh.model.occ
    dom, el = spec.domain, spec.electrodes
    if isinstance(dom, CylinderDomain):
        body = occ.addCylinder(0, 0, 0, 0, 0, dom.height, dom.radius)
    else:
        tags = [occ.addPoint(x, y, 0.0) for x, y in dom.outline(_OUTLINE_POINTS_CAD)]
        loop = occ.addCurveLoop([occ.addSpline([*tags, tags[0]])])
        body = [t for d, t in occ.extrude([(2, occ.addPlaneSurface([loop]))], 0, 0, dom.height)
                if d == 3][0]
    boxes = []
    depth = 4 * max(el.width, el.height)
    for arc, c in zip(spec.electrode_arc, centres, strict=True):
        a, b = outline.point_at(np.array([arc - 1e-3, arc + 1e-3]))
        tangent = (b - a) / np.linalg.norm(b - a)
        box = occ.addBox(-depth / 2, -el.width / 2, -el.height / 2, depth, el.width, el.height)
        occ.rotate([(3, box)], 0, 0, 0, 0, 0, 1, np.arctan2(-tangent[0], tangent[1]))
        occ.translate([(3, box)], *c)
        boxes.append((3, box))
    occ.fragment([(3, body)], boxes)
    occ.synchronize()
    inside = PolyPath(dom.outline(1024))
    outside = [(d, t) for d, t in gmsh.model.getEntities(3)
               if not inside.contains_point(occ.getCenterOfMass(d, t)[:2])]
    occ.remove(outside, recursive=True)
    occ.synchronize()
    boundary = gmsh.model.getBoundary(gmsh.model.getEntities(3), combined=True, oriented=False)
    tags = np.array([t for _, t in boundary])
    com = np.array([occ.getCenterOfMass(2, t) for t in tags])
    faces = []
    for k, c in enumerate(centres):
        d = np.linalg.norm(com - c, axis=1)
        if d.min() > min(el.width, el.height) / 2:
            raise ValueError(f"electrodes: electrode {k} could not be imprinted on the boundary")
        faces.append(int(tags[np.argmin(d)]))
    return faces


def _positively_oriented(nodes: np.ndarray, tets: np.ndarray) -> np.ndarray:
    p = nodes[tets]
    det = np.einsum("ij,ij->i", np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]), p[:, 3] - p[:, 0])
    out = tets.copy()
    flip = det < 0
    out[flip, 0], out[flip, 1] = tets[flip, 1], tets[flip, 0]
    return out
