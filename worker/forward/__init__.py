"""The 3D forward model: geometry, mesh, complete electrode model, protocols, voxel Jacobian.

`load_model` is imported lazily so that the torch- and gmsh-free spec modules stay cheap to
import from the API process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from worker.forward.model import ForwardModel


def load_model(geometry: Any = None, protocol: Any = None, grid: Any = None,
               **kwargs: Any) -> ForwardModel:
    """Build (or load from the disk cache) the forward model; see `worker.forward.model`."""
    from worker.forward.model import load_model as _load_model

    return _load_model(geometry=geometry, protocol=protocol, grid=grid, **kwargs)


__all__ = ["load_model"]
