"""Which reconstruction method a session gets, on which device, and what sessions with the same
geometry, protocol and grid share: the forward model and the preview reconstructor.

A worker's methods are a mapping name -> factory handed to its constructor (by default every
method registered with `worker.recon.base`, with the options each registered for breaths'
tidal differences), so tests inject their own."""

from __future__ import annotations

import inspect
import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from service.contract.session import SessionConfig
from worker.recon.base import (
    FrameResult,
    StreamingReconstructor,
    available_methods,
    get_method,
    tidal_options,
)
from worker.runtime.builds import (
    POLL_S,
    BuildCancelled,
    ModelBuilder,
    is_cached,
    model_arguments,
)

if TYPE_CHECKING:
    from worker.forward.model import ForwardModel

Factory = Callable[..., StreamingReconstructor]

# Fallbacks when a configured method is not offered: best quality first for the main volumes,
# fastest first for the preview.
MAIN_PREFERENCE = ("d2ip", "dip", "rsip", "tv", "tikhonov")
PREVIEW_PREFERENCE = ("tikhonov", "tv", "rsip", "dip", "d2ip")


def registered() -> dict[str, Factory]:
    """The methods registered with `worker.recon.base` (the built-in ones included)."""
    return {name: get_method(name) for name in available_methods()}


def registered_tidal() -> dict[str, dict[str, Any]]:
    """The options the registered methods take on tidal differences (`breath` policy)."""
    return {name: options for name in available_methods() if (options := tidal_options(name))}


def resolve_device(setting: str) -> str:
    """cpu, cuda, or for auto whichever torch offers."""
    if setting != "auto":
        return setting
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class MethodTable:
    """The reconstruction methods a worker offers (name -> factory), their device, and the
    options each takes on breaths' tidal differences (`tidal`)."""

    def __init__(self, factories: Mapping[str, Factory], device: str,
                 tidal: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        if not factories:
            raise RuntimeError("no reconstruction method is registered")
        self.factories, self.device = dict(factories), device
        self.tidal = {name: dict(options) for name, options in (tidal or {}).items()}

    def resolve(self, name: str, preference: tuple[str, ...]) -> str:
        """`name` when offered, else the first offered method of `preference`, else any."""
        if name in self.factories:
            return name
        return next((m for m in preference if m in self.factories), min(self.factories))

    def build(self, name: str, model: ForwardModel, tidal: bool = False
              ) -> StreamingReconstructor:
        """A new reconstructor, with its tidal-difference options when `tidal` (the `breath`
        policy); methods whose factory takes a `device` keyword get it."""
        factory = self.factories[name]
        options = dict(self.tidal.get(name, {})) if tidal else {}
        try:
            takes_device = "device" in inspect.signature(factory).parameters
        except (TypeError, ValueError):
            takes_device = False
        if takes_device:
            options["device"] = self.device
        return factory(model, **options)


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
    them, dropped after the last one ends. A model in neither memory nor the disk cache is
    built by `builder` in a separate process (`builds.py`), once for every session waiting
    for it."""

    def __init__(self, methods: MethodTable, preview_method: str, builder: ModelBuilder) -> None:
        self.methods, self.preview_method, self.builder = methods, preview_method, builder
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._building: dict[str, threading.Event] = {}

    @staticmethod
    def key(config: SessionConfig) -> str:
        return json.dumps(model_arguments(config), sort_keys=True)

    def available(self, config: SessionConfig) -> bool:
        """True when the model needs no build (in memory or in the disk cache)."""
        with self._lock:
            if self.key(config) in self._entries:
                return True
        return is_cached(model_arguments(config))

    def acquire(self, config: SessionConfig, cancelled: Callable[[], bool] = lambda: False
                ) -> tuple[ForwardModel, SharedPreview]:
        """The session's model (from memory, the disk cache, or a cold build in a separate
        process) and preview. BuildFailed, or BuildCancelled once `cancelled()`."""
        key = self.key(config)
        while True:
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None:
                    entry.refs += 1
                    return entry.model, entry.preview
                building = self._building.get(key)
                if building is None:
                    building = self._building[key] = threading.Event()
                    break
            while not building.wait(POLL_S):  # another session builds it: wait, then look
                if cancelled():
                    raise BuildCancelled("the session no longer needs the model")
        try:
            model = self._load(config, cancelled)
            preview = SharedPreview(self.methods.build(self.preview_method, model))
            with self._lock:
                entry = self._entries.setdefault(key, _Entry(model, preview))
                entry.refs += 1
                return entry.model, entry.preview
        finally:
            with self._lock:
                del self._building[key]
            building.set()

    def _load(self, config: SessionConfig, cancelled: Callable[[], bool]) -> ForwardModel:
        from worker.forward import load_model

        arguments = model_arguments(config)
        if not is_cached(arguments):
            self.builder.build(arguments, cancelled)
        return load_model(**arguments)

    def release(self, config: SessionConfig) -> None:
        key = self.key(config)
        with self._lock:
            entry = self._entries[key]
            entry.refs -= 1
            if entry.refs <= 0:
                del self._entries[key]
