"""The simulated cases: a breath-state timeline per frame and a reference policy.

- `healthy-deep-breath` (D2IP IV.A case 1): one deep inhalation over T = 20 frames; lungs fall
  from 0.20 to 0.105 S/m while their volume rises sinusoidally from 2/3 of full inspiration to
  full; background 0.24 S/m. Reference: the empty thorax (homogeneous background), so all T
  frames are difference frames.
- `edema-left` (case 2): a tidal inhalation over 20 frames; healthy lung from 0.14 to 0.0835
  S/m, volume 0.75 -> 0.90; the dorsal part of the left lung keeps 0.24 S/m throughout.
  Reference: the first frame, leaving T - 1 = 19 difference frames.
- `tidal-breathing` (the live demo): 20 frames/s for `duration` s; breaths of 4.4 s mean
  period (13.6 per minute, s.d. 0.4 s) and depth varying by 15 % (s.d.) breath to breath; the
  lung state u = depth·(1 - cos 2πφ)/2 sets conductivity 0.14 - 0.0565 u S/m and volume
  0.70 (1 + 0.2 u); the heart's conductivity pulses by ±3 % at 1.2 Hz. Reference: the mean of
  the end-expiration frames (the frames where each breath starts).
In the first two cases heart and spine keep the background conductivity, as in the paper,
where only the lungs change.
- `tank-shapes` (the Diff-INR seed's tank, `worker.simulation.tank`): a static cylinder tank
  with extruded triangle, rectangle and circle inclusions; `frames` noisy copies (default 1).
  Reference: the empty tank. Needs a cylinder geometry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from worker.simulation.phantom import BreathState

CASES = ("healthy-deep-breath", "edema-left", "tidal-breathing", "tank-shapes")
TANK_CASES = ("tank-shapes",)
THORAX_CASES = tuple(c for c in CASES if c not in TANK_CASES)  # the breathing thoraxes
FRAME_RATE = 20.0
_CARDIAC_HZ, _CARDIAC_AMP = 1.2, 0.03
_TIDAL_LUNG_SIGMA, _TIDAL_LUNG_DROP = 0.14, 0.14 - 0.0835


@dataclass(frozen=True)
class Timeline:
    """Per-frame breath states of one case (including a reference frame when the policy is
    "first"), their times, and how the reference is formed."""

    case: str
    states: list[BreathState]
    times: np.ndarray
    reference: Literal["empty", "first", "end-expiration"]
    end_expiration: np.ndarray  # frame indices averaged for the "end-expiration" reference
    edema: bool
    lung_state: np.ndarray  # u per frame (tidal) or the inhalation fraction w (others)
    cardiac: np.ndarray  # relative heart-conductivity deviation per frame


def _inhalation(n: int) -> np.ndarray:
    """Sinusoidal inhalation fraction (1 - cos πk/(n-1))/2, 0 -> 1 over n frames."""
    return 0.5 * (1.0 - np.cos(np.pi * np.arange(n) / max(n - 1, 1)))


def timeline(case: str, background: float, frames: int | None = None,
             duration: float = 60.0, seed: int = 0) -> Timeline:
    """The timeline of `case`; `frames` overrides the default frame count (or duration)."""
    if case == "healthy-deep-breath":
        w = _inhalation(frames or 20)
        states = [BreathState(2 / 3 + w_ / 3, 0.20 + (0.105 - 0.20) * w_, background) for w_ in w]
        return Timeline(case, states, np.arange(w.size) / FRAME_RATE, "empty",
                        np.array([], dtype=int), False, w, np.zeros_like(w))
    if case == "edema-left":
        w = _inhalation(frames or 20)
        states = [BreathState(0.75 + 0.15 * w_, 0.14 + (0.0835 - 0.14) * w_, background)
                  for w_ in w]
        return Timeline(case, states, np.arange(w.size) / FRAME_RATE, "first",
                        np.array([0]), True, w, np.zeros_like(w))
    if case == "tidal-breathing":
        n = frames or int(round(duration * FRAME_RATE))
        t = np.arange(n) / FRAME_RATE
        u, starts = tidal_lung_state(t, seed)
        cardiac = _CARDIAC_AMP * np.sin(2 * np.pi * _CARDIAC_HZ * t)
        states = [tidal_state(u_, c, background) for u_, c in zip(u, cardiac, strict=True)]
        return Timeline(case, states, t, "end-expiration", starts, False, u, cardiac)
    if case == "tank-shapes":
        n = frames or 1
        still = np.zeros(n)
        return Timeline(case, [BreathState(1.0, background, background)] * n,
                        np.arange(n) / FRAME_RATE, "empty", np.array([], dtype=int), False,
                        still, still)
    raise ValueError(f"case: unknown case {case!r}; cases: {', '.join(CASES)}")


def tidal_state(u: float, cardiac: float, background: float) -> BreathState:
    """Breath state of tidal breathing at lung state u and cardiac deviation."""
    return BreathState(0.70 * (1 + 0.2 * u), _TIDAL_LUNG_SIGMA - _TIDAL_LUNG_DROP * u,
                       background * (1 + cardiac))


def tidal_lung_state(t: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """u(t) = depth_b (1 - cos 2πφ)/2 within breath b, and the frame index of each breath start."""
    rng = np.random.default_rng(seed)
    u = np.zeros_like(t)
    starts = []
    start = 0.0
    while start < t[-1] + 1e-9:
        period = float(np.clip(rng.normal(4.4, 0.4), 3.4, 5.4))
        depth = float(np.clip(rng.normal(1.0, 0.15), 0.6, 1.4))
        inside = (t >= start) & (t < start + period)
        u[inside] = depth * 0.5 * (1 - np.cos(2 * np.pi * (t[inside] - start) / period))
        starts.append(int(np.searchsorted(t, start - 1e-9)))
        start += period
    return u, np.unique(np.clip(starts, 0, t.size - 1))
