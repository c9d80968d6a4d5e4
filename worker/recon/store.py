"""On-disk cache of per-model reconstruction operators (singular systems, Tikhonov matrices).

Files live in a `recon/` folder beside the model cache (`worker.forward.cache`): next to the
model's own file when it came from a cache, else under `cache_dir()`. A file name joins a
kind, the model's cache key and a hash of the method settings (plus `FORMAT_VERSION`, bumped
whenever the numerics change). Writes are atomic (temporary file, then rename), so concurrent
workers never read half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from worker.forward import cache

if TYPE_CHECKING:
    from worker.forward.model import ForwardModel

FORMAT_VERSION = 1


def folder(model: ForwardModel) -> Path:
    """`recon/` beside the model cache the model came from (or the default cache folder)."""
    root = model.cache_path.parent.parent if model.cache_path is not None else cache.cache_dir()
    return root / "recon"


def path_for(model: ForwardModel, kind: str, settings: dict[str, Any]) -> Path:
    """The cache file of `kind` for this model and these settings."""
    model_key = cache.path_for(model.spec).stem.removeprefix("model-")
    text = json.dumps({"settings": settings, "format": FORMAT_VERSION}, sort_keys=True)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return folder(model) / f"{kind}-{model_key}-{digest}.npz"


def cached(path: Path, build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The arrays stored at `path`, or `build()`'s, written there first."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):  # absent or unreadable: rebuild
        pass
    arrays = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as fh:
        np.savez(fh, **arrays)
    os.replace(fh.name, path)
    return arrays
