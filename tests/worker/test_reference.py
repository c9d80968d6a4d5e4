"""Choosing a reference and a subset of frames (worker/reference.py)."""

from __future__ import annotations

import numpy as np
import pytest

from worker.reference import choose_reference, frame_slice, reference_frames

TIMES = np.arange(10) / 5.0  # 0 .. 1.8 s


@pytest.mark.parametrize(("spec", "frames"), [
    ("mean", list(range(10))), ("first:3", [0, 1, 2]), ("frames:4-7", [4, 5, 6]),
    ("window:0.5-1.0", [3, 4]), ("window:1.5-99", [8, 9]),
])
def test_reference_frames(spec: str, frames: list[int]) -> None:
    assert reference_frames(spec, TIMES).tolist() == frames


def test_choose_reference_is_the_mean() -> None:
    voltages = np.arange(30.0).reshape(10, 3)
    np.testing.assert_array_equal(choose_reference(voltages, TIMES, "frames:0-2"), [1.5, 2.5, 3.5])


@pytest.mark.parametrize("spec", ["first:0", "first:11", "frames:5-5", "frames:3-12",
                                  "window:5-6", "window:1-0.5", "median", "frames:a-b"])
def test_bad_references(spec: str) -> None:
    with pytest.raises(ValueError, match="reference"):
        reference_frames(spec, TIMES)


def test_frame_slice() -> None:
    assert frame_slice("2:5", 10) == slice(2, 5)
    assert frame_slice(":3", 10) == slice(0, 3) and frame_slice("7:", 10) == slice(7, 10)
    assert frame_slice("8:99", 10) == slice(8, 10)
    for bad in ("5:5", "10:", "a:b", "3"):
        with pytest.raises(ValueError, match="frames"):
            frame_slice(bad, 10)
