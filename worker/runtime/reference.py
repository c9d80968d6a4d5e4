"""The reference voltages a session's frames are normalised against (D2IP eq. 1).

Policies (the session's `reference` setting):
- `{"mode": "first_n", "frames": N}`: the average of the session's first N frames;
- `{"mode": "explicit"}`: the voltages of the in-band `reference` entries of the frame stream.
An in-band `reference` entry (`PUT /v1/sessions/{id}/reference`) replaces the reference in
either mode, from the next frame on. Frames that arrive before a reference exists wait for it
and are then reconstructed against it like every other frame (see docs/worker.md).

Every new reference is checked against the session's model (`check_model`, the check `eitmon
import` runs, `worker.devices.consistency`): one that anti-correlates with the model's
homogeneous voltages (a flipped current sign, a wrong protocol) fails the session; a weak
correlation is a warning in its live quality summary.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from worker.devices.consistency import ProtocolCheck, check_protocol

if TYPE_CHECKING:
    from worker.forward.model import ForwardModel


class ProtocolMismatch(ValueError):
    """The reference anti-correlates with the model: every attempt would fail alike."""


def check_model(reference: np.ndarray, model: ForwardModel) -> ProtocolCheck:
    """The reference against the model's homogeneous voltages; ProtocolMismatch when the
    overall correlation is negative (an undefined one, of a constant reference, is let
    through: the quality summary leaves it out)."""
    check = check_protocol(reference, model.reference_voltages, model.protocol.meas_injection)
    if check.overall < 0:
        raise ProtocolMismatch(
            f"the reference anti-correlates with the model's homogeneous voltages "
            f"(r = {check.overall:+.3f}): check the protocol's current sign and the "
            f"electrode order")
    return check


class Reference:
    """The current reference and, in first_n mode, the average being built."""

    def __init__(self, policy: dict[str, Any], value: np.ndarray | None = None) -> None:
        self.first_n = int(policy["frames"]) if policy.get("mode") == "first_n" else 0
        self.value = value
        self._sum: np.ndarray | None = None
        self._count = 0

    @property
    def ready(self) -> bool:
        return self.value is not None

    def set(self, voltages: np.ndarray) -> None:
        """An explicit reference: applies to every later frame."""
        self.value = np.array(voltages, dtype=np.float64)

    def observe(self, voltages: np.ndarray) -> None:
        """A frame arrived; in first_n mode it joins the average until N frames are in."""
        if self.ready or not self.first_n:
            return
        v = np.asarray(voltages, dtype=np.float64)
        self._sum = v.copy() if self._sum is None else self._sum + v
        self._count += 1
        if self._count == self.first_n:
            self.value = self._sum / self._count
