"""The interface: registry, normalisation, offline runs, and checkpointable states."""

from __future__ import annotations

import mmap
from typing import Any

import numpy as np
import pytest
import torch

from worker.forward.model import ForwardModel
from worker.recon import base
from worker.recon.base import (
    POPULATE_BYTES,
    FrameResult,
    StreamingReconstructor,
    available_methods,
    create,
    get_method,
    normalise,
    output_array,
    reconstruct_recording,
    register,
)


class Counter(StreamingReconstructor):
    """Returns the frame's mean in every voxel; state: the frame counter."""

    method = "counter"

    def __init__(self, model: ForwardModel, scale: float = 1.0) -> None:
        super().__init__(model)
        self.scale, self.frames = scale, 0

    def push(self, dv: np.ndarray) -> FrameResult:
        self.frames += 1
        return self.timed(lambda: (np.full(self.model.n_voxels, self.scale * dv.mean()),
                                   self.frames, 0.0))

    def state_dict(self) -> dict[str, Any]:
        return {"frames": self.frames}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.frames = state["frames"]


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The registry with the built-ins loaded; changes are undone after the test."""
    available_methods()
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))
    return base._REGISTRY


def test_builtins_are_registered() -> None:
    assert {"tikhonov", "tv", "rsip"} <= set(available_methods())


def test_unknown_method_names_the_available_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown method 'nope'; available: .*tikhonov"):
        get_method("nope")


def test_register_and_create(registry: dict[str, Any], coarse_model: ForwardModel) -> None:
    register("counter")(Counter)
    assert "counter" in available_methods() and get_method("counter") is Counter
    recon = create("counter", coarse_model, device="cuda", scale=2.0)  # no device: not passed
    assert recon.scale == 2.0 and recon.settings == {}


def test_create_passes_device_to_methods_that_take_it(coarse_model: ForwardModel) -> None:
    assert create("tikhonov", coarse_model, device="cpu").device == torch.device("cpu")


def test_normalise() -> None:
    ref = np.array([2.0, -4.0, 0.01, 4.0])
    v = np.array([[3.0, -2.0, 0.02, 4.0], [2.0, -4.0, 0.01, 2.0]])
    rms = np.sqrt(np.mean(ref**2))
    expected = np.array([[0.5, 0.5, 0.01 / (0.1 * rms), 0.0], [0.0, 0.0, 0.0, -0.5]])
    np.testing.assert_allclose(normalise(v, ref), expected)  # channel 2 hits the floor


def test_reconstruct_recording(coarse_model: ForwardModel,
                               capsys: pytest.CaptureFixture[str]) -> None:
    ref = coarse_model.reference_voltages
    voltages = ref * (1 + 0.01 * np.arange(1, 6)[:, None])
    volumes, results = reconstruct_recording(Counter(coarse_model), voltages, ref,
                                             progress=True, batch=2)
    assert volumes.shape == (5, *coarse_model.grid.shape)
    assert [r.iterations for r in results] == [1, 2, 3, 4, 5]  # in order, across batches
    dv = normalise(voltages, ref)
    np.testing.assert_allclose(volumes[:, coarse_model.mask][:, 0], dv.mean(axis=1), rtol=1e-6)
    assert not volumes[:, ~coarse_model.mask].any()
    assert "counter" in capsys.readouterr().err  # the tqdm bar


class Batched(Counter):
    """A Counter with its own `push_many`, recording the batch sizes it is given."""

    def __init__(self, model: ForwardModel) -> None:
        super().__init__(model)
        self.batches: list[int] = []

    def push_many(self, dvs: np.ndarray) -> list[FrameResult]:
        self.batches.append(len(dvs))
        return [self.push(dv) for dv in dvs]


class Bar:
    """Stands in for tqdm: records the steps of `update`."""

    steps: list[int] = []

    def __init__(self, **_: Any) -> None:
        Bar.steps = []

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, *_: object) -> None:
        return None

    def update(self, n: int) -> None:
        Bar.steps.append(n)


def test_reconstruct_recording_bar_moves_per_frame_for_default_push_many(
        coarse_model: ForwardModel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "tqdm", Bar)
    ref = coarse_model.reference_voltages
    voltages = ref * (1 + 0.01 * np.arange(1, 6)[:, None])
    reconstruct_recording(Counter(coarse_model), voltages, ref, batch=2)
    assert Bar.steps == [1, 1, 1, 1, 1]  # the default push_many: one frame at a time
    batched = Batched(coarse_model)
    reconstruct_recording(batched, voltages, ref, batch=2)
    assert batched.batches == [2, 2, 1] and Bar.steps == [2, 2, 1]


def _leaves_ok(tree: Any) -> bool:
    """Only leaves a pickle-free checkpoint can hold (the worker's state codec)."""
    if tree is None or isinstance(tree, (bool, int, float, str, np.ndarray, np.generic,
                                         torch.Tensor)):
        return True
    if isinstance(tree, dict):
        return all(_leaves_ok(k) and _leaves_ok(v) for k, v in tree.items())
    if isinstance(tree, (list, tuple)):
        return all(_leaves_ok(v) for v in tree)
    return False


@pytest.mark.parametrize("name, options", [("tikhonov", {}), ("tv", {}),
                                           ("rsip", {"first_iterations": 5, "iterations": 2})])
def test_states_are_plain_data(name: str, options: dict[str, Any], coarse_model: ForwardModel,
                               healthy_dv: np.ndarray) -> None:
    recon = create(name, coarse_model, **options)
    recon.push(healthy_dv[0])
    assert _leaves_ok(recon.state_dict())
    assert isinstance(recon.settings, dict)


def test_output_arrays_large_and_small_are_plain_writable_arrays() -> None:
    """A recording's volumes: from `POPULATE_BYTES` on, mapped populated (Linux), else
    `np.empty`; either way an ordinary writable array of the shape and type asked."""
    for frames in (2, 1000):
        shape = (frames, 16, 32, 32)
        out = output_array(shape, np.float32)
        assert out.shape == shape and out.dtype == np.float32 and out.flags.writeable
        out[-1] = 7.0
        assert float(out[-1].sum()) == 7.0 * 16 * 32 * 32
        populated = out.nbytes >= POPULATE_BYTES and hasattr(mmap, "MAP_POPULATE")
        assert _mapped(out) == populated


def _mapped(array: np.ndarray) -> bool:
    """Whether an anonymous mapping holds the array's memory (its chain of bases)."""
    base: Any = array.base
    while base is not None and not isinstance(base, mmap.mmap):
        base = base.obj if isinstance(base, memoryview) else getattr(base, "base", None)
    return base is not None
