"""The worker's on-disk storage: the cache root, content keys, one atomic write, read-or-build.

- `cache_dir()`: `EITMON_CACHE_DIR`, else `~/.cache/eitmon` (`worker.settings.EngineSettings`).
  Forward models, reconstruction operators, simulations, warm starts, compiled kernels and
  checkpoints live in folders under it.
- `content_key(spec)`: the sha256 of the canonical JSON of a spec (keys sorted), so equal specs
  give equal keys whatever the order of their keys. Bump a format number inside the spec
  whenever the numerics behind a file change.
- `write_atomic(path, write)`: `write` fills a temporary file in the target's folder; the file
  is flushed to disk (fsync), renamed over the target (`os.replace`, atomic on POSIX) and the
  folder is synced, so concurrent readers see the old file or the whole new one, never a part,
  and a crash never leaves a truncated file under the target's name.
- `read_or_build(path, read, build, write)`: the stored value when it is readable, else
  `build()`'s, written atomically first. `cached_arrays` is its form for a dict of numpy arrays.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from worker.settings import EngineSettings

DEFAULT_KEY_LENGTH = 20

Value = TypeVar("Value")


def cache_dir(override: str | Path | None = None) -> Path:
    """The cache root: `override`, else `EITMON_CACHE_DIR`, else `~/.cache/eitmon`."""
    if override is not None:
        return Path(override)
    return EngineSettings().cache_dir


def content_key(spec: Any, length: int = DEFAULT_KEY_LENGTH) -> str:
    """Hex sha256 (first `length` digits) of `spec` as canonical JSON (sorted keys)."""
    text = json.dumps(spec, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Create or replace `path` atomically and durably; `write(temporary_path)` fills the file.

    The temporary file sits in the target's folder (so the rename stays on one file system),
    starts with a dot and ends with the target's suffix (writers such as `np.savez` append a
    suffix otherwise). When `write` raises, the temporary file is removed and the target is
    left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(handle)
    temporary = Path(name)
    try:
        write(temporary)
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    """fsync a folder, so that a rename inside it survives a crash (POSIX only)."""
    if os.name != "posix":
        return
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def read_or_build(path: Path, read: Callable[[Path], Value | None], build: Callable[[], Value],
                  write: Callable[[Value, Path], None]) -> Value:
    """`read(path)` when it gives a value (None: absent or unreadable), else `build()`'s value,
    written to `path` with `write_atomic` first."""
    stored = read(path)
    if stored is not None:
        return stored
    value = build()
    write_atomic(path, lambda temporary: write(value, temporary))
    return value


def read_arrays(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays of an .npz file, or None when it is absent or unreadable."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def write_arrays(arrays: dict[str, np.ndarray], path: Path) -> None:
    """Write `arrays` as an (uncompressed) .npz file."""
    np.savez(path, **arrays)


def cached_arrays(path: Path, build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The arrays stored at `path`, or `build()`'s, stored there first (`read_or_build`)."""
    return read_or_build(path, read_arrays, build, write_arrays)
