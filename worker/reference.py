"""Choosing the difference-imaging reference and a subset of a recording's frames.

Reference specs (`eitmon import --reference`, `eitmon reconstruct --reference`):
- `mean`: the mean of all frames;
- `first:N`: the mean of the first N frames;
- `frames:A-B`: the mean of frames A to B-1 (0-based, B excluded);
- `window:T0-T1`: the mean of the frames with T0 <= t < T1 (the recording's frame times, s).
Frame subsets (`--frames A:B`): frames A to B-1, 0-based; either end may be left out.
"""

from __future__ import annotations

import re

import numpy as np

REFERENCE_HELP = "mean | first:N | frames:A-B | window:T0-T1"
_NUMBER = r"(-?[0-9]+(?:\.[0-9]*)?)"


def _frames_between(n_frames: int, start: int, stop: int, spec: str) -> slice:
    if not 0 <= start < stop <= n_frames:
        raise ValueError(f"reference {spec!r}: frames {start}..{stop - 1} are not within the "
                         f"recording's 0..{n_frames - 1}")
    return slice(start, stop)


def reference_frames(spec: str, frame_times: np.ndarray) -> np.ndarray:
    """Indices of the frames whose mean is the reference `spec` (see the module doc)."""
    n_frames = len(frame_times)
    spec = spec.strip()
    if spec == "mean":
        return np.arange(n_frames)
    kind, _, arg = spec.partition(":")
    if kind == "first" and arg.isdigit():
        return np.arange(n_frames)[_frames_between(n_frames, 0, int(arg), spec)]
    match = re.fullmatch(r"([0-9]+)-([0-9]+)", arg)
    if kind == "frames" and match:
        start, stop = int(match.group(1)), int(match.group(2))
        return np.arange(n_frames)[_frames_between(n_frames, start, stop, spec)]
    match = re.fullmatch(f"{_NUMBER}-{_NUMBER}", arg)
    if kind == "window" and match:
        t0, t1 = float(match.group(1)), float(match.group(2))
        inside = np.flatnonzero((frame_times >= t0) & (frame_times < t1))
        if t1 <= t0 or inside.size == 0:
            raise ValueError(f"reference {spec!r}: no frame in [{t0}, {t1}) s (the recording "
                             f"spans {frame_times[0]:g}..{frame_times[-1]:g} s)")
        return inside
    raise ValueError(f"reference: expected {REFERENCE_HELP}, got {spec!r}")


def choose_reference(voltages: np.ndarray, frame_times: np.ndarray, spec: str) -> np.ndarray:
    """The reference voltages (M) that `spec` names: a mean over some of the frames."""
    return voltages[reference_frames(spec, frame_times)].mean(axis=0)


def frame_slice(spec: str, n_frames: int) -> slice:
    """`A:B` (either end optional) as a slice of 0..n_frames-1 holding at least one frame."""
    match = re.fullmatch(r"([0-9]*):([0-9]*)", spec.strip())
    if not match:
        raise ValueError(f"frames: expected A:B (0-based, B excluded), got {spec!r}")
    start = int(match.group(1)) if match.group(1) else 0
    stop = int(match.group(2)) if match.group(2) else n_frames
    if not 0 <= start < min(stop, n_frames):
        raise ValueError(f"frames {spec!r}: no frame of the recording's 0..{n_frames - 1}")
    return slice(start, min(stop, n_frames))
