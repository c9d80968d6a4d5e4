"""The data-quality report of a recording (offline; numpy only).

Per channel (a measurement of the protocol):
- level: |mean| over the frames (a near-zero level makes Δv/v meaningless);
- noise: the robust std of the second difference in time, / sqrt(6) (white noise of std s has
  a second difference of std s·sqrt(6)); breathing is slow enough to drop out of it, at about
  13 frames/s a cardiac signal partly stays in (an upper bound on the noise);
- relative noise = noise / level; a channel is usable when its level is above `LEVEL_FLOOR`
  x the median level and its relative noise below `NOISE_CEILING`.
Per electrode pair (a drive or measurement pair of the protocol), over the channels that use
the pair to drive or to measure:
- noise ratio: their median relative noise / the median over all channels;
- reciprocity error: median of |v - v_r| / mean(|v|, |v_r|) with v_r the reciprocal channel
  (drive and measurement swapped), on the time-mean; only when the device measured both;
- model misfit (when the homogeneous-model check ran): median |log(measured / model)| after
  removing one overall gain;
- usable fraction.
An electrode scores as its best pair: a bad contact spoils every pair it is in, while its
neighbours keep one good pair each. It is flagged when a score is out of line (see
`ElectrodeLimits`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

LEVEL_FLOOR = 0.02  # x the median channel level
NOISE_CEILING = 0.05  # relative noise


@dataclass(frozen=True)
class ElectrodeLimits:
    """When an electrode is flagged."""

    noise_ratio: float = 3.0  # x the median channel's relative noise
    reciprocity: float = 0.05  # at least, and at least 3 x the median electrode's
    misfit: float = 0.5  # |log| (a factor 1.65) at least, and at least 3 x the median's
    usable: float = 0.5  # fewer of its channels usable than this


def _channel_electrodes(weights: np.ndarray, currents: np.ndarray, meas_injection: np.ndarray
                        ) -> tuple[list[frozenset[int]], list[frozenset[int]]]:
    measured = [frozenset(np.flatnonzero(row).tolist()) for row in weights]
    driven = [frozenset(np.flatnonzero(currents[k]).tolist()) for k in meas_injection]
    return driven, measured


def reciprocal_partners(weights: np.ndarray, currents: np.ndarray, meas_injection: np.ndarray
                        ) -> np.ndarray:
    """For each channel, the channel that swaps its drive and measurement pairs, or -1."""
    driven, measured = _channel_electrodes(weights, currents, meas_injection)
    index = {(d, m): k for k, (d, m) in enumerate(zip(driven, measured, strict=True))}
    return np.array([index.get((m, d), -1) for d, m in zip(driven, measured, strict=True)])


def channel_noise(voltages: np.ndarray) -> np.ndarray:
    """Robust std of each channel's white noise from its second difference in time (M)."""
    if voltages.shape[0] < 3:
        return np.full(voltages.shape[1], np.nan)
    d2 = np.diff(voltages, n=2, axis=0)
    mad = np.median(np.abs(d2 - np.median(d2, axis=0)), axis=0)
    return 1.4826 * mad / np.sqrt(6.0)


@dataclass
class QualityReport:
    """See the module doc; electrode arrays are indexed 0..L-1 (printed 1..L)."""

    level: np.ndarray
    relative_noise: np.ndarray
    usable: np.ndarray
    electrode_noise_ratio: np.ndarray
    electrode_reciprocity: np.ndarray | None
    electrode_misfit: np.ndarray | None
    electrode_usable: np.ndarray
    flags: dict[int, list[str]] = field(default_factory=dict)

    @property
    def usable_fraction(self) -> float:
        return float(self.usable.mean())

    @property
    def flagged(self) -> list[int]:
        """Flagged electrodes, 0-based."""
        return sorted(self.flags)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary for a recording's meta (electrodes 1-based in `flagged`)."""
        def rounded(values: np.ndarray | None) -> list[float | None] | None:
            if values is None:
                return None
            return [None if not np.isfinite(v) else round(float(v), 4) for v in values]

        return {
            "channels": int(self.usable.size), "usable_channels": int(self.usable.sum()),
            "usable_fraction": round(self.usable_fraction, 4),
            "unusable_channels": np.flatnonzero(~self.usable).tolist(),
            "median_relative_noise": round(float(np.nanmedian(self.relative_noise)), 6),
            "electrodes": {"noise_ratio": rounded(self.electrode_noise_ratio),
                           "reciprocity_error": rounded(self.electrode_reciprocity),
                           "model_misfit": rounded(self.electrode_misfit),
                           "usable_fraction": rounded(self.electrode_usable)},
            "flagged_electrodes": [e + 1 for e in self.flagged],
            "flags": {str(e + 1): reasons for e, reasons in sorted(self.flags.items())},
            "limits": {"level_floor": LEVEL_FLOOR, "noise_ceiling": NOISE_CEILING,
                       **ElectrodeLimits().__dict__},
        }

    def table(self) -> str:
        """A plain-text table: one line per electrode, then the channel summary."""
        def cell(values: np.ndarray | None, e: int, fmt: str) -> str:
            return "n/a" if values is None or not np.isfinite(values[e]) else fmt % values[e]

        reciprocity = (None if self.electrode_reciprocity is None
                       else 100 * self.electrode_reciprocity)
        lines = ["electrode (as numbered in the file)",
                 "electrode  noise x median  reciprocity err  model misfit  usable  flag",
                 "---------  --------------  ---------------  ------------  ------  ----"]
        for e in range(self.electrode_usable.size):
            flag = "; ".join(self.flags.get(e, [])) or "ok"
            lines.append(f"{e + 1:>9}  {cell(self.electrode_noise_ratio, e, '%.2f'):>14}  "
                         f"{cell(reciprocity, e, '%.1f %%'):>15}  "
                         f"{cell(self.electrode_misfit, e, '%.2f'):>12}  "
                         f"{100 * self.electrode_usable[e]:>5.0f}%  {flag}")
        lines.append(f"usable channels: {int(self.usable.sum())} of {self.usable.size} "
                     f"({100 * self.usable_fraction:.1f} %); median relative noise "
                     f"{100 * float(np.nanmedian(self.relative_noise)):.2f} %; flagged "
                     f"electrodes: {', '.join(str(e + 1) for e in self.flagged) or 'none'}")
        return "\n".join(lines)


def _per_electrode(values: np.ndarray, pairs: list[tuple[frozenset[int], np.ndarray]],
                   n_electrodes: int, best: str = "min") -> np.ndarray:
    """Each electrode's best (min or max) over its pairs of the pair's median value."""
    medians = [(pair, np.nanmedian(values[idx]) if np.isfinite(values[idx]).any() else np.nan)
               for pair, idx in pairs]
    pick = np.nanmin if best == "min" else np.nanmax
    out = np.full(n_electrodes, np.nan)
    for e in range(n_electrodes):
        scores = [m for pair, m in medians if e in pair and np.isfinite(m)]
        if scores:
            out[e] = pick(scores)
    return out


def _out_of_line(values: np.ndarray | None, floor: float) -> np.ndarray:
    if values is None:
        return np.zeros(0, dtype=bool)
    limit = max(floor, 3.0 * float(np.nanmedian(values)))
    return np.nan_to_num(values, nan=0.0) > limit


def quality_report(voltages: np.ndarray, currents: np.ndarray, meas_injection: np.ndarray,
                   meas_weights: np.ndarray, reciprocals_measured: bool = True,
                   channel_ratio: np.ndarray | None = None,
                   limits: ElectrodeLimits | None = None) -> QualityReport:
    """The report for T x M `voltages` of a built protocol (currents, meas_injection,
    meas_weights as in `service.contract.protocol.Protocol`); `channel_ratio` is the
    homogeneous-model check's measured/model ratio (see `worker.devices.consistency`)."""
    limits = limits or ElectrodeLimits()
    level = np.abs(voltages.mean(axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = channel_noise(voltages) / level
    usable = (level > LEVEL_FLOOR * np.median(level)) & (np.nan_to_num(relative, nan=np.inf)
                                                         < NOISE_CEILING)
    driven, measured = _channel_electrodes(meas_weights, currents, meas_injection)
    n_electrodes = currents.shape[1]
    pairs = [(pair, np.array([k for k in range(level.size)
                              if driven[k] == pair or measured[k] == pair]))
             for pair in sorted(set(driven) | set(measured), key=sorted)]
    noise_ratio = _per_electrode(relative / np.nanmedian(relative), pairs, n_electrodes)
    reciprocity = None
    if reciprocals_measured:
        partner = reciprocal_partners(meas_weights, currents, meas_injection)
        mean = voltages.mean(axis=0)
        error = np.full(level.size, np.nan)
        has = partner >= 0
        with np.errstate(divide="ignore", invalid="ignore"):
            error[has] = (np.abs(mean[has] - mean[partner[has]])
                          / (0.5 * (np.abs(mean[has]) + np.abs(mean[partner[has]]))))
        reciprocity = _per_electrode(error, pairs, n_electrodes) if has.any() else None
    misfit = None
    if channel_ratio is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            misfit = _per_electrode(np.abs(np.log(np.abs(channel_ratio))), pairs,
                                    n_electrodes)
    electrode_usable = np.nan_to_num(_per_electrode(usable.astype(float), pairs, n_electrodes,
                                                    best="max"))
    flags: dict[int, list[str]] = {}
    checks = [
        (np.nan_to_num(noise_ratio, nan=0.0) > limits.noise_ratio, "noisy"),
        (_out_of_line(reciprocity, limits.reciprocity), "reciprocity"),
        (_out_of_line(misfit, limits.misfit), "model misfit"),
        (electrode_usable < limits.usable, "few usable channels"),
    ]
    for hits, reason in checks:
        for e in np.flatnonzero(hits):
            flags.setdefault(int(e), []).append(reason)
    return QualityReport(level=level, relative_noise=relative, usable=usable,
                         electrode_noise_ratio=noise_ratio, electrode_reciprocity=reciprocity,
                         electrode_misfit=misfit, electrode_usable=electrode_usable, flags=flags)
