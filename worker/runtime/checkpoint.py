"""Session checkpoints: the main reconstructor's state, the reference, the breath scheduling's
state (`breath` policy), and where in the frame stream they stand, in one `.npz` file (no
pickles, see `state_codec`). The preview method is a one-step linear map with no state worth
keeping.

Files live in `<EITMON_CHECKPOINT_DIR>/<sid>/<epoch>-<stream id>.npz`, written with
`worker.storage.write_atomic` (a temporary file whose name starts with a dot, fsynced and
renamed), so a reader never sees half a file. Writing a file is not enough: a checkpoint
counts once `Fenced.commit_checkpoint` has recorded its name in the progress hash under the
writer's lease, so a worker that lost its lease can write files but never make them current.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from worker.runtime import state_codec
from worker.storage import write_atomic

FORMAT = 1
START = "0-0"  # stream position before the first entry


@dataclass
class Checkpoint:
    """Everything a worker needs to continue a session after `stream_id`."""

    sid: str
    epoch: int
    stream_id: str  # the last frame-stream entry the state includes
    main_method: str
    main_state: Any
    reference: np.ndarray | None  # in effect for the frames after stream_id
    counters: dict[str, int] = field(default_factory=dict)  # snapshot, for the record
    created_at: float = field(default_factory=time.time)
    breath: Any = None  # `BreathPolicy.state_dict()` under the `breath` policy

    @property
    def name(self) -> str:
        """The file name relative to the checkpoint folder."""
        return f"{self.sid}/{self.epoch:010d}-{self.stream_id}.npz"


def write(directory: Path, ckpt: Checkpoint) -> str:
    """Write atomically; returns the name to commit."""
    tree, arrays = state_codec.encode({"main": ckpt.main_state, "reference": ckpt.reference,
                                       "breath": ckpt.breath})
    meta = {"format": FORMAT, "sid": ckpt.sid, "epoch": ckpt.epoch, "stream_id": ckpt.stream_id,
            "main_method": ckpt.main_method, "counters": ckpt.counters,
            "created_at": ckpt.created_at}
    write_atomic(directory / ckpt.name, lambda temporary: np.savez(
        temporary, __meta__=np.array(json.dumps(meta)), __tree__=np.array(json.dumps(tree)),
        **arrays))
    return ckpt.name


def read(directory: Path, name: str) -> Checkpoint:
    """Load a committed checkpoint; OSError/ValueError when it is missing or unreadable."""
    path = directory / name
    with np.load(path, allow_pickle=False) as archive:
        meta = json.loads(str(archive["__meta__"]))
        tree = json.loads(str(archive["__tree__"]))
        arrays = {k: archive[k] for k in archive.files if not k.startswith("__")}
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: unsupported checkpoint format {meta.get('format')!r}")
    state = state_codec.decode(tree, arrays)
    return Checkpoint(sid=meta["sid"], epoch=meta["epoch"], stream_id=meta["stream_id"],
                      main_method=meta["main_method"], main_state=state["main"],
                      reference=state["reference"], counters=meta["counters"],
                      created_at=meta["created_at"], breath=state.get("breath"))


def prune(directory: Path, keep: str) -> None:
    """Delete the session's other checkpoint files (older or never committed), but not the
    temporary files of writes in progress (their names start with a dot)."""
    kept = directory / keep
    for path in kept.parent.glob("*.npz"):
        if path != kept and not path.name.startswith("."):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def session_dirs(directory: Path) -> list[Path]:
    """The per-session folders under the checkpoint folder."""
    if not directory.is_dir():
        return []
    return [path for path in directory.iterdir() if path.is_dir() and len(path.name) == 32]


def remove_session(path: Path) -> None:
    """Delete a session's checkpoint folder (its keys have expired)."""
    for file in path.iterdir():
        with contextlib.suppress(FileNotFoundError):
            file.unlink()
    with contextlib.suppress(OSError):
        path.rmdir()
