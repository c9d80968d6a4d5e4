"""Does the recording match its protocol? The model's homogeneous voltages against the
measured reference.

A protocol with the wrong current sign (EIDORS's injection [0, b] drives -1 on electrode e,
our `skip` presets +1) or the wrong electrode order has the same measurement count as the
right one, so only the voltages can tell. The Pearson correlation of the measured reference
with the model's voltages at the background conductivity is checked over all channels and
within each injection's channels; a negative overall correlation is refused (a flipped sign
makes it about -1), one below `WARN_BELOW` is warned about (wrong order, electrode positions
or geometry).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

WARN_BELOW = 0.8  # overall correlation below which the import warns
INJECTION_WARN_BELOW = 0.5  # an injection's channels correlating less are listed


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b / denom) if denom > 0 else float("nan")


@dataclass(frozen=True)
class ProtocolCheck:
    """Correlations of the measured reference with the model's homogeneous voltages.

    channel_ratio: measured / model per channel, divided by its median (1 = as the model
    predicts up to one overall gain; the quality report uses it per electrode).
    """

    overall: float
    per_injection: list[float]
    channel_ratio: np.ndarray
    verdict: Literal["ok", "warn", "refuse"]
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"overall": round(self.overall, 4),
                "per_injection": [round(c, 4) for c in self.per_injection],
                "verdict": self.verdict, "message": self.message}


def check_protocol(measured: np.ndarray, model: np.ndarray, meas_injection: np.ndarray
                   ) -> ProtocolCheck:
    """Compare a measured reference (M) with the model's homogeneous voltages (M)."""
    overall = _pearson(measured, model)
    per_injection = [_pearson(measured[meas_injection == k], model[meas_injection == k])
                     if np.count_nonzero(meas_injection == k) > 2 else float("nan")
                     for k in range(int(meas_injection.max()) + 1)]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = measured / model
    ratio = ratio / np.nanmedian(ratio)
    low = [k for k, c in enumerate(per_injection) if c < INJECTION_WARN_BELOW]
    low_text = f"; injections with r < {INJECTION_WARN_BELOW}: {low}" if low else ""
    if not overall > 0:
        verdict = "refuse"
        message = (f"the measured reference anti-correlates with the model's homogeneous "
                   f"voltages (r = {overall:+.3f}): the protocol's current or measurement sign "
                   f"looks flipped (EIDORS's inj [0, b] drives -1 on electrode e, our skip "
                   f"presets +1)")
    elif overall < WARN_BELOW:
        verdict = "warn"
        message = (f"the measured reference correlates only weakly with the model's homogeneous "
                   f"voltages (r = {overall:+.3f} < {WARN_BELOW}): check the protocol, the "
                   f"electrode order and the geometry{low_text}")
    else:
        verdict = "ok"
        message = (f"the measured reference matches the model's homogeneous voltages "
                   f"(r = {overall:+.3f}){low_text}")
    return ProtocolCheck(overall=overall, per_injection=per_injection, channel_ratio=ratio,
                         verdict=verdict, message=message)


def homogeneous_voltages(model: Any, protocol: Any = None) -> np.ndarray:
    """The model's voltages at its background conductivity (M), for its own protocol or for
    another `protocol` on the same geometry (one more CEM solve on the model's mesh)."""
    from service.contract.protocol import resolve_protocol
    from worker.forward.fem import measure

    if protocol is None:
        return model.reference_voltages
    spec = resolve_protocol(protocol)
    if spec == model.protocol_spec:
        return model.reference_voltages
    built = spec.build(model.geometry.electrodes.count)
    sigma = np.full(model.mesh.n_elements, model.geometry.background_conductivity)
    return measure(model.cem.solve(sigma), model.geometry.current_amplitude * built.currents,
                   built.meas_injection, built.meas_weights)
