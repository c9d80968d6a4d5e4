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

Drift (`electrode_drift`, when frame times are given): a contact whose gain changes slowly
scales every channel that uses the electrode by 1 + d(t); Δv/v turns it into a trend on those
channels only, which breathing does not explain. Per channel, over the frames, the relative
change r_i(t) = v_i(t)/mean_t(v_i) - 1 is fitted by least squares as
c_i + a_i·G(t) + s_i·(t - mean t), G the global curve (the median of r over the channels, at
each frame), s_i its trend in %/min. Each electrode takes its best pair's median trend (the
one of least magnitude, as above), minus the median electrode's (a change common to every
channel, e.g. the current source's or the whole thorax's, is no contact fault). The fit runs
twice: the second time G leaves out the channels of the electrodes whose first-pass |trend| is
over 3 x the median's, whose drift would otherwise leak into G and, through a_i, into every
channel. An electrode is flagged "drift" when (`DriftLimits`) its change over the frames
(trend x span) is at least 1 %, its trend at least 20 x the median electrode's |trend| (out of
line), and it persists: each half of the frames, fitted alone, gives the same sign and at
least half the trend. A fluctuation (a slow regional change, a partial cardiac or breath
cycle) fails the last test; a contact that keeps drifting passes it. The limits' evidence:
docs/real-data.md "Drift".
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


@dataclass(frozen=True)
class DriftLimits:
    """When an electrode is flagged for drift (see the module doc, docs/real-data.md)."""

    change_pct: float = 1.0  # gain change over the frames, %, relative to the median electrode
    out_of_line: float = 20.0  # x the median electrode's |trend|
    suspect: float = 3.0  # x the median |trend|: left out of the global curve's second pass
    persistence: float = 0.5  # each half's trend, at least this fraction of the whole's
    min_seconds: float = 4.0  # frames spanning less are not judged


@dataclass(frozen=True)
class ElectrodeDrift:
    """Per electrode (0-based): trend of its gain relative to the median electrode, %/min,
    over `seconds`; the electrodes flagged."""

    trend_pct_per_min: np.ndarray
    seconds: float
    flagged: tuple[int, ...]

    @property
    def change_pct(self) -> np.ndarray:
        return self.trend_pct_per_min * self.seconds / 60.0


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
    drift: ElectrodeDrift | None = None

    def add_drift(self, drift: ElectrodeDrift | None) -> None:
        """Attach a drift check (possibly over other frames than the rest) and its flags."""
        self.flags = {e: [r for r in reasons if r != "drift"] for e, reasons in self.flags.items()}
        self.flags = {e: reasons for e, reasons in self.flags.items() if reasons}
        self.drift = drift
        for e in () if drift is None else drift.flagged:
            self.flags.setdefault(e, []).append("drift")

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
                           "usable_fraction": rounded(self.electrode_usable),
                           "drift_pct_per_min": rounded(None if self.drift is None
                                                        else self.drift.trend_pct_per_min)},
            "drift_seconds": None if self.drift is None else round(self.drift.seconds, 2),
            "flagged_electrodes": [e + 1 for e in self.flagged],
            "flags": {str(e + 1): reasons for e, reasons in sorted(self.flags.items())},
            "limits": {"level_floor": LEVEL_FLOOR, "noise_ceiling": NOISE_CEILING,
                       **ElectrodeLimits().__dict__,
                       "drift": DriftLimits().__dict__},
        }

    def table(self) -> str:
        """A plain-text table: one line per electrode, then the channel summary."""
        def cell(values: np.ndarray | None, e: int, fmt: str) -> str:
            return "n/a" if values is None or not np.isfinite(values[e]) else fmt % values[e]

        reciprocity = (None if self.electrode_reciprocity is None
                       else 100 * self.electrode_reciprocity)
        drift = None if self.drift is None else self.drift.change_pct
        span = "" if self.drift is None else f" over {self.drift.seconds:.0f} s"
        lines = ["electrode (as numbered in the file)",
                 "electrode  noise x median  reciprocity err  model misfit  usable  "
                 f"drift{span}  flag",
                 "---------  --------------  ---------------  ------------  ------  "
                 f"{'-' * len('drift' + span)}  ----"]
        for e in range(self.electrode_usable.size):
            flag = "; ".join(self.flags.get(e, [])) or "ok"
            lines.append(f"{e + 1:>9}  {cell(self.electrode_noise_ratio, e, '%.2f'):>14}  "
                         f"{cell(reciprocity, e, '%.1f %%'):>15}  "
                         f"{cell(self.electrode_misfit, e, '%.2f'):>12}  "
                         f"{100 * self.electrode_usable[e]:>5.0f}%  "
                         f"{cell(drift, e, '%+.2f %%'):>{len('drift' + span)}}  {flag}")
        lines.append(f"usable channels: {int(self.usable.sum())} of {self.usable.size} "
                     f"({100 * self.usable_fraction:.1f} %); median relative noise "
                     f"{100 * float(np.nanmedian(self.relative_noise)):.2f} %; flagged "
                     f"electrodes: {', '.join(str(e + 1) for e in self.flagged) or 'none'}")
        return "\n".join(lines)


def _smallest(scores: list[float]) -> float:
    """The score of least magnitude, with its sign."""
    return scores[int(np.argmin(np.abs(scores)))]


_PICKS = {"min": min, "max": max, "smallest": _smallest}


def _per_electrode(values: np.ndarray, pairs: list[tuple[frozenset[int], np.ndarray]],
                   n_electrodes: int, best: str = "min") -> np.ndarray:
    """Each electrode's best (min, max, or `smallest` in magnitude) over its pairs of the
    pair's median value."""
    medians = [(pair, np.nanmedian(values[idx]) if np.isfinite(values[idx]).any() else np.nan)
               for pair, idx in pairs]
    pick = _PICKS[best]
    out = np.full(n_electrodes, np.nan)
    for e in range(n_electrodes):
        scores = [float(m) for pair, m in medians if e in pair and np.isfinite(m)]
        if scores:
            out[e] = pick(scores)
    return out


def _trends(relative: np.ndarray, times: np.ndarray, use: np.ndarray) -> np.ndarray:
    """Each channel's trend, %/min, beside the global curve of the channels in `use`."""
    curve = np.median(relative[:, use], axis=1)
    design = np.column_stack([np.ones(times.size), curve - curve.mean(), times - times.mean()])
    coef, *_ = np.linalg.lstsq(design, relative, rcond=None)
    return coef[2] * 6000.0


def _electrode_trends(voltages: np.ndarray, times: np.ndarray,
                      pairs: list[tuple[frozenset[int], np.ndarray]], n_electrodes: int,
                      limits: DriftLimits) -> np.ndarray:
    """Per electrode trend relative to the median electrode (%/min), two passes."""
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = voltages / voltages.mean(axis=0) - 1.0
    finite = np.all(np.isfinite(relative), axis=0)
    relative = np.where(finite, relative, 0.0)
    use = finite.copy()
    trend = np.zeros(n_electrodes)
    for _ in range(2):
        per = _per_electrode(_trends(relative, times, use), pairs, n_electrodes, "smallest")
        trend = np.nan_to_num(per - np.nanmedian(per))
        outliers = np.abs(trend) > limits.suspect * np.median(np.abs(trend))
        if not outliers.any():
            break
        suspect = {int(e) for e in np.flatnonzero(outliers)}
        use = finite.copy()
        for pair, idx in pairs:
            if pair & suspect:
                use[idx] = False
        if not use.any():
            break
    return trend


def electrode_drift(voltages: np.ndarray, frame_times: np.ndarray, currents: np.ndarray,
                    meas_injection: np.ndarray, meas_weights: np.ndarray,
                    limits: DriftLimits | None = None) -> ElectrodeDrift | None:
    """The drift check of the module doc on T x M `voltages` at `frame_times` (s); None when
    they span less than `limits.min_seconds`."""
    limits = limits or DriftLimits()
    times = np.asarray(frame_times, dtype=np.float64)
    seconds = float(times[-1] - times[0]) if times.size > 1 else 0.0
    if seconds < limits.min_seconds or times.size < 8:
        return None
    driven, measured = _channel_electrodes(meas_weights, currents, meas_injection)
    n_electrodes = currents.shape[1]
    pairs = _pairs(driven, measured)
    trend = _electrode_trends(voltages, times, pairs, n_electrodes, limits)
    spread = float(np.median(np.abs(trend)))
    candidates = np.flatnonzero((np.abs(trend) * seconds / 60.0 >= limits.change_pct)
                                & (np.abs(trend) >= limits.out_of_line * spread))
    flagged = []
    if candidates.size:
        half = times.size // 2
        parts = [_electrode_trends(voltages[sl], times[sl], pairs, n_electrodes, limits)
                 for sl in (slice(0, half), slice(half, None))]
        for e in candidates:
            if all(np.sign(p[e]) == np.sign(trend[e])
                   and abs(p[e]) >= limits.persistence * abs(trend[e]) for p in parts):
                flagged.append(int(e))
    return ElectrodeDrift(trend_pct_per_min=trend, seconds=seconds, flagged=tuple(flagged))


def _pairs(driven: list[frozenset[int]], measured: list[frozenset[int]]
           ) -> list[tuple[frozenset[int], np.ndarray]]:
    """Every drive or measurement pair with the channels that use it."""
    return [(pair, np.array([k for k in range(len(driven))
                             if driven[k] == pair or measured[k] == pair], dtype=int))
            for pair in sorted(set(driven) | set(measured), key=sorted)]


def _out_of_line(values: np.ndarray | None, floor: float) -> np.ndarray:
    if values is None:
        return np.zeros(0, dtype=bool)
    limit = max(floor, 3.0 * float(np.nanmedian(values)))
    return np.nan_to_num(values, nan=0.0) > limit


def quality_report(voltages: np.ndarray, currents: np.ndarray, meas_injection: np.ndarray,
                   meas_weights: np.ndarray, reciprocals_measured: bool = True,
                   channel_ratio: np.ndarray | None = None,
                   limits: ElectrodeLimits | None = None,
                   frame_times: np.ndarray | None = None,
                   drift_limits: DriftLimits | None = None) -> QualityReport:
    """The report for T x M `voltages` of a built protocol (currents, meas_injection,
    meas_weights as in `service.contract.protocol.Protocol`); `channel_ratio` is the
    homogeneous-model check's measured/model ratio (see `worker.devices.consistency`); with
    `frame_times` (s), the drift check too."""
    limits = limits or ElectrodeLimits()
    level = np.abs(voltages.mean(axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = channel_noise(voltages) / level
    usable = (level > LEVEL_FLOOR * np.median(level)) & (np.nan_to_num(relative, nan=np.inf)
                                                         < NOISE_CEILING)
    driven, measured = _channel_electrodes(meas_weights, currents, meas_injection)
    n_electrodes = currents.shape[1]
    pairs = _pairs(driven, measured)
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
    report = QualityReport(level=level, relative_noise=relative, usable=usable,
                           electrode_noise_ratio=noise_ratio, electrode_reciprocity=reciprocity,
                           electrode_misfit=misfit, electrode_usable=electrode_usable,
                           flags=flags)
    if frame_times is not None:
        report.add_drift(electrode_drift(voltages, frame_times, currents, meas_injection,
                                         meas_weights, drift_limits))
    return report
