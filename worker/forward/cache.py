"""On-disk cache of built forward models, keyed by a hash of every input.

The key hashes the JSON of the geometry, protocol and grid specs together with
`FORMAT_VERSION`, which is bumped whenever the numerics change. Files are written atomically
(temporary file, then rename) so concurrent workers never read half a file. The folder is
`EITMON_CACHE_DIR`, else `~/.cache/eitmon`.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from worker.forward.mesh import Mesh

if TYPE_CHECKING:
    from worker.forward.model import ForwardModel

FORMAT_VERSION = 1


def cache_dir(override: str | Path | None = None) -> Path:
    if override is not None:
        return Path(override)
    env = os.environ.get("EITMON_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "eitmon"


def path_for(spec: dict[str, Any], override: str | Path | None = None) -> Path:
    text = json.dumps({"spec": spec, "format": FORMAT_VERSION}, sort_keys=True)
    digest = hashlib.sha256(text.encode()).hexdigest()[:20]
    return cache_dir(override) / "models" / f"model-{digest}.npz"


def write(path: Path, model: ForwardModel) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    faces = model.mesh.electrodes
    proj = model.projection.tocsr()
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as fh:
        np.savez(fh, nodes=model.mesh.nodes, tets=model.mesh.tets,
                 faces=np.concatenate(faces), face_counts=np.array([len(f) for f in faces]),
                 proj_data=proj.data, proj_indices=proj.indices, proj_indptr=proj.indptr,
                 proj_shape=np.array(proj.shape), mask=model.mask, jacobian=model.jacobian,
                 reference_voltages=model.reference_voltages)
    os.replace(fh.name, path)


def read(path: Path) -> dict[str, Any] | None:
    """The arrays of a cached model, or None when absent or unreadable."""
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            faces = np.split(z["faces"], np.cumsum(z["face_counts"])[:-1])
            proj = sp.csr_matrix((z["proj_data"], z["proj_indices"], z["proj_indptr"]),
                                 shape=tuple(z["proj_shape"]))
            return {"mesh": Mesh(nodes=z["nodes"], tets=z["tets"], electrodes=tuple(faces)),
                    "projection": proj, "mask": z["mask"], "jacobian": z["jacobian"],
                    "reference_voltages": z["reference_voltages"]}
    except (OSError, ValueError, KeyError):
        return None
