"""On-disk cache of built forward models, keyed by the content of every input.

The key (`worker.storage.content_key`) hashes the geometry, protocol and grid specs together
with `FORMAT_VERSION`, which is bumped whenever the numerics change. Files are written with
`worker.storage.write_atomic`, so concurrent workers never read half a file. The folder is
`models/` under the cache root (`worker.storage.cache_dir`).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from worker.forward.mesh import Mesh
from worker.storage import cache_dir, content_key, write_atomic

FORMAT_VERSION = 1

def model_key(spec: dict[str, Any]) -> str:
    """The content key of a model spec (`ForwardModel.spec`)."""
    return content_key({"spec": spec, "format": FORMAT_VERSION})


def path_for(spec: dict[str, Any], override: str | Path | None = None) -> Path:
    return cache_dir(override) / "models" / f"model-{model_key(spec)}.npz"


def operator_path(model_path: Path) -> Path:
    """The file of the singular system of the model cached at `model_path`, beside it."""
    return model_path.with_name(model_path.name.replace("model-", "operator-", 1))


def write(path: Path, *, mesh: Mesh, projection: sp.spmatrix, mask: np.ndarray,
          jacobian: np.ndarray, reference_voltages: np.ndarray) -> None:
    """Store a built model's arrays (the inverse of `read`)."""
    faces = mesh.electrodes
    proj = projection.tocsr()

    def save(temporary: Path) -> None:
        np.savez(temporary, nodes=mesh.nodes, tets=mesh.tets,
                 faces=np.concatenate(faces), face_counts=np.array([len(f) for f in faces]),
                 proj_data=proj.data, proj_indices=proj.indices, proj_indptr=proj.indptr,
                 proj_shape=np.array(proj.shape), mask=mask, jacobian=jacobian,
                 reference_voltages=reference_voltages)

    write_atomic(path, save)


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
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
