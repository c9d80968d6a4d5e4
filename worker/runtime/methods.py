"""Which reconstruction method a session gets, on which device, and what sessions with the same
geometry, protocol and grid share: the forward model and the preview reconstructor."""

from __future__ import annotations

import inspect
import json
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from service.contract.session import SessionConfig
from worker.recon.base import FrameResult, StreamingReconstructor, available_methods, get_method

if TYPE_CHECKING:
    from worker.forward.model import ForwardModel

# Fallbacks when a configured method is not registered (yet): best quality first for the main
# volumes, fastest first for the preview.
MAIN_PREFERENCE = ("d2ip", "dip", "rsip", "tv", "tikhonov")
PREVIEW_PREFERENCE = ("tikhonov", "tv", "rsip", "dip", "d2ip")


def resolve(name: str, preference: tuple[str, ...]) -> str:
    """`name` when registered, else the first registered method of `preference`, else any."""
    available = available_methods()
    if name in available:
        return name
    fallback = next((m for m in preference if m in available), None)
    fallback = fallback or (available[0] if available else None)
    if fallback is None:
        raise RuntimeError("no reconstruction method is registered")
    return fallback


def resolve_device(setting: str) -> str:
    """cpu, cuda, or for auto whichever torch offers."""
    if setting != "auto":
        return setting
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def build(name: str, model: ForwardModel, device: str) -> StreamingReconstructor:
    """A new reconstructor; methods whose factory takes a `device` keyword get it."""
    factory = get_method(name)
    try:
        takes_device = "device" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        takes_device = False
    return factory(model, device=device) if takes_device else factory(model)


class SharedPreview:
    """One preview reconstructor shared by every session on a model: the preview is a one-step
    linear map whose state nobody keeps, and sharing it lets the intake preview the frames of
    all those sessions in one batched product (one pass over the matrix)."""

    def __init__(self, recon: StreamingReconstructor) -> None:
        self.recon = recon
        self._lock = threading.Lock()  # the intake and setup threads both preview

    def push_many(self, dvs: np.ndarray) -> list[FrameResult]:
        with self._lock:
            return self.recon.push_many(dvs)


@dataclass
class _Entry:
    model: ForwardModel
    preview: SharedPreview
    refs: int = 0


class ModelCache:
    """Forward models (and their shared preview) by spec, shared by the sessions that use
    them, dropped after the last one ends."""

    def __init__(self, preview_method: str, device: str) -> None:
        self.preview_method, self.device = preview_method, device
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}

    @staticmethod
    def key(cfg: SessionConfig) -> str:
        return json.dumps([cfg.geometry, cfg.protocol, list(cfg.grid)], sort_keys=True)

    def acquire(self, cfg: SessionConfig) -> tuple[ForwardModel, SharedPreview]:
        """The session's model (from memory, the disk cache, or a cold build) and preview."""
        from worker.forward import load_model

        key = self.key(cfg)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                entry.refs += 1
                return entry.model, entry.preview
        model = load_model(geometry=cfg.geometry, protocol=cfg.protocol, grid=list(cfg.grid))
        preview = SharedPreview(build(self.preview_method, model, self.device))
        with self._lock:
            entry = self._entries.setdefault(key, _Entry(model, preview))
            entry.refs += 1
            return entry.model, entry.preview

    def release(self, cfg: SessionConfig) -> None:
        key = self.key(cfg)
        with self._lock:
            entry = self._entries[key]
            entry.refs -= 1
            if entry.refs <= 0:
                del self._entries[key]
