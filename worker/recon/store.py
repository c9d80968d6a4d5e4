"""On-disk cache of per-model reconstruction operators (singular systems, Tikhonov matrices).

Files live in a `recon/` folder beside the model cache (`worker.forward.cache`): next to the
model's own file when it came from a cache, else under the cache root. A file name joins a
kind, the model's content key and the content key of the method settings (with
`FORMAT_VERSION`, bumped whenever the numerics change); files are read or built and written
atomically by `worker.storage`. A model whose operator has other data weights
(`ForwardModel.with_weights`) adds the operator's `variant` key to the settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from worker import storage
from worker.forward import cache

if TYPE_CHECKING:
    from worker.forward.model import ForwardModel

FORMAT_VERSION = 1
SETTINGS_KEY_LENGTH = 16


def folder(model: ForwardModel) -> Path:
    """`recon/` beside the model cache the model came from (or under the cache root)."""
    root = (model.cache_path.parent.parent if model.cache_path is not None
            else storage.cache_dir())
    return root / "recon"


def path_for(model: ForwardModel, kind: str, settings: dict[str, Any]) -> Path:
    """The cache file of `kind` for this model and these settings."""
    keyed: dict[str, Any] = {"settings": settings, "format": FORMAT_VERSION}
    if model.operator.variant is not None:
        keyed["weights"] = model.operator.variant
    settings_key = storage.content_key(keyed, SETTINGS_KEY_LENGTH)
    return folder(model) / f"{kind}-{cache.model_key(model.spec)}-{settings_key}.npz"

