"""Electrode faults of real belts, applied to simulated voltages (issue 19 §3-4).

- `broken`: the electrode lost contact. Every channel that drives or measures with it keeps
  `BROKEN_GAIN` of its voltage plus, on every frame and on the reference independently, noise
  of `BROKEN_NOISE` x the channel's level: what such a channel shows on a real device (a
  fraction of the signal under contact noise; the quality report flags it).
- `drift`: the electrode's contact drifts: its channels' voltages are scaled by
  1 + `DRIFT` · t / t_end, a slow gain change over the recording (from the first frame),
  which Δv = (v - v_ref)/v_ref turns into a ramp on those channels only.

The geometry faults of the fault bench (belt off by 1 cm, a wider thorax) need no code here:
`simulate(geometry=...)` takes the simulation's own geometry dict while the model keeps its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from service.contract.protocol import Protocol
from worker.forward.operator import channels_using

BROKEN_GAIN = 0.4
BROKEN_NOISE = 0.1
DRIFT = 0.05

FaultKind = Literal["broken", "drift"]
FAULT_KINDS: tuple[FaultKind, ...] = ("broken", "drift")


@dataclass(frozen=True)
class ElectrodeFault:
    """One faulty electrode (0-based) and its kind."""

    electrode: int
    kind: FaultKind = "broken"

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"fault: unknown kind {self.kind!r}; kinds: {', '.join(FAULT_KINDS)}")


def apply_faults(voltages: np.ndarray, reference: np.ndarray | None, times: np.ndarray,
                 protocol: Protocol, faults: list[ElectrodeFault], rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray | None]:
    """Faulty copies of T x M `voltages` (frame `times`) and of a separately measured
    `reference` (None when the reference is formed from the frames)."""
    voltages = np.array(voltages, dtype=float)
    reference = None if reference is None else np.array(reference, dtype=float)
    span = max(float(times[-1] - times[0]), 1e-12) if len(times) > 1 else 1.0
    for fault in faults:
        if not 0 <= fault.electrode < protocol.meas_weights.shape[1]:
            raise ValueError(f"fault: electrode {fault.electrode} is not on the belt")
        hit = channels_using(protocol.currents, protocol.meas_injection, protocol.meas_weights,
                             [fault.electrode])
        if fault.kind == "broken":
            level = np.abs(voltages[:, hit]).mean(axis=0)
            voltages[:, hit] = (BROKEN_GAIN * voltages[:, hit]
                                + rng.normal(0.0, 1.0, voltages[:, hit].shape)
                                * BROKEN_NOISE * level)
            if reference is not None:
                reference[hit] = (BROKEN_GAIN * reference[hit]
                                  + rng.normal(0.0, 1.0, hit.sum()) * BROKEN_NOISE * level)
        else:
            gain = 1.0 + DRIFT * (times - times[0]) / span
            voltages[:, hit] *= gain[:, None]
    return voltages, reference
