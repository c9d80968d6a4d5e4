"""Why the child's heart rate is not the stated 135/min: the spectral evidence (issue 19).

Computed on the measured channels (no model: Δv/v against the mean of all frames) of a
recording read as `eitmon import` reads it, at the frame rate its sidecar states:

- the global curve Σ_i Δv_i/v_i and its periodogram (Hann window over the whole record, mean
  and linear trend removed, zero-padded x16 for peak positions);
- the detector's spectrum applied to channels: the mean of the channels' unit-sum spectra
  minus the global one (`worker.ventilation.heart.detect_rates` applies it to voxels, as
  eitprocessing's `RateDetection` does to pixels);
- the strongest line in the heart band, the channel carrying most of it, its harmonics, its
  stability (upward zero-crossing periods of its band-pass), whether its 3rd harmonic
  is phase-locked to it (R = |mean exp(i(φ3 - 3φ1))| over time, 1 = one waveform) and whether
  the line is locked to 3x the breathing (the same R between the line and the global curve's
  breath band, ±3/min around its peak: near 1 for a harmonic of the ventilation; chance level
  from 200 circular time shifts of the line);
- the breath peak and the line in four equal segments (a harmonic follows the breathing);
- the strongest peak within ±5/min of a stated heart rate, away from the line's harmonics
  (more than 1.5·k/min from the k-th: a harmonic spreads k times the line's width), against
  the typical noise peak (the median of the maxima of the ten 10/min-wide windows in
  150-250/min, where no line lies; about 1 = nothing above noise), and the frame rate that
  would move the line to the stated rate with the ventilation rate it would then imply.

Also: the band-pass of the line is ±5/min around it (38-48/min for the child).

    eitmon bench heart --data ../shared/realdata --out DIR

writes heart-evidence.json and heart-evidence.png (with the recording's attribution).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
from scipy import signal

from worker.bench.realdata import LICENSE, RealRecording
from worker.devices.goettingen import read_get
from worker.ventilation.breaths import detect_breaths
from worker.ventilation.heart import RATE_LIMITS_PER_MIN

MINUTE = 60.0
PAD = 16
FLOOR_BAND_PER_MIN = (150.0, 250.0)
BREATH_LOWPASS_PER_MIN = 30.0


def relative_changes(voltages: np.ndarray) -> np.ndarray:
    """(T, M) Δv/v against the mean of all frames (channels with a zero mean are dropped)."""
    reference = voltages.mean(axis=0)
    keep = reference != 0
    return (voltages[:, keep] - reference[keep]) / reference[keep]


def periodogram(x: np.ndarray, rate: float) -> tuple[np.ndarray, np.ndarray]:
    """(frequencies per minute, power) along axis 0: detrended, Hann, zero-padded x`PAD`."""
    n = x.shape[0]
    window = np.hanning(n).reshape(-1, *([1] * (x.ndim - 1)))
    spectrum = np.fft.rfft(signal.detrend(x, axis=0) * window, n=PAD * n, axis=0)
    return np.fft.rfftfreq(PAD * n, 1 / rate) * MINUTE, np.abs(spectrum) ** 2


def _peak(freqs: np.ndarray, power: np.ndarray, low: float, high: float) -> float:
    inside = (freqs >= low) & (freqs <= high)
    return float(freqs[inside][np.argmax(power[inside])])


def _band(freqs: np.ndarray, low: float, high: float) -> np.ndarray:
    return (freqs >= low) & (freqs <= high)


def _electrodes(protocol: dict[str, Any], channel: int) -> dict[str, list[int]]:
    measurement = protocol["measurements"][channel]
    injection = protocol["injections"][measurement["injection"]]
    return {"drive": [e + 1 for e in injection["electrodes"]],
            "measure": [e + 1 for e in measurement["electrodes"]]}


def _noise_peak(freqs: np.ndarray, power: np.ndarray) -> float:
    """Median of the maxima of 10/min-wide windows across `FLOOR_BAND_PER_MIN`."""
    low, high = FLOOR_BAND_PER_MIN
    return float(np.median([power[_band(freqs, a, a + 10)].max()
                            for a in np.arange(low, high, 10.0)]))


def _bandpass(x: np.ndarray, rate: float, low: float, high: float) -> np.ndarray:
    sos = signal.butter(3, [low / MINUTE, high / MINUTE], btype="band", fs=rate, output="sos")
    return signal.sosfiltfilt(sos, x, axis=0)


def evidence(voltages: np.ndarray, rate: float, subject: str = "adult",
             stated_heart_per_min: float | None = None,
             stated_respiratory_per_min: float | None = None,
             protocol: dict[str, Any] | None = None) -> dict[str, Any]:
    """The spectral facts listed in the module doc for (T, M) voltages at `rate` frames/s;
    with an explicit `protocol`, the carrier channel's electrodes (1-based, its numbering)."""
    dv = relative_changes(voltages)
    total = dv.sum(axis=1)
    freqs, p_total = periodogram(total, rate)
    _, p_channels = periodogram(dv, rate)
    live = p_channels.sum(axis=0) > 0
    difference = ((p_channels[:, live] / p_channels[:, live].sum(axis=0)).mean(axis=1)
                  - p_total / p_total.sum())
    lo_r, hi_r = RATE_LIMITS_PER_MIN[subject]["respiratory"]
    lo_h, hi_h = RATE_LIMITS_PER_MIN[subject]["heart"]
    breath = _peak(freqs, p_total, lo_r, hi_r)
    line = _peak(freqs, difference, lo_h, hi_h)
    near = _band(freqs, line - 2, line + 2)
    carrier = int(np.argmax(p_channels[near].sum(axis=0) / p_channels.sum(axis=0)))
    x = dv[:, carrier]
    _, p_carrier = periodogram(x, rate)
    floor = _band(freqs, *FLOOR_BAND_PER_MIN)
    harmonics = []
    for k in (1, 2, 3, 4):
        if k * line + 3 >= rate / 2 * MINUTE:
            break
        at = _peak(freqs, p_carrier, k * line - 3, k * line + 3)
        harmonics.append({"k": k, "per_min": round(at, 2), "power_over_floor": float(
            p_carrier[_band(freqs, at - 0.5, at + 0.5)].max() / np.median(p_carrier[floor]))})
    fundamental = _bandpass(x, rate, line - 5, line + 5)
    phase1 = np.unwrap(np.angle(signal.hilbert(fundamental)))
    edge = int(4 * rate)  # filter transients
    inner = slice(edge, len(x) - edge)
    lock3 = None  # the 3rd harmonic above the Nyquist rate (a neonate's heart at 13/s)
    if 3 * line + 9 < rate / 2 * MINUTE:
        third = _bandpass(x, rate, 3 * line - 9, 3 * line + 9)
        phase3 = np.unwrap(np.angle(signal.hilbert(third)))
        lock3 = round(float(np.abs(np.mean(np.exp(1j * (phase3 - 3 * phase1)[inner])))), 3)
    crossings = np.flatnonzero((fundamental[:-1] < 0) & (fundamental[1:] >= 0)) / rate
    periods = np.diff(crossings)
    breathing = np.angle(signal.hilbert(_bandpass(total, rate, breath - 3, breath + 3)))
    line_phase = np.angle(signal.hilbert(fundamental))

    def lock(phase: np.ndarray) -> float:
        return float(np.abs(np.mean(np.exp(1j * (phase - 3 * breathing)[inner]))))

    shifts = np.random.default_rng(0).integers(edge, len(x) - edge, 200)
    chance = np.percentile([lock(np.roll(line_phase, int(k))) for k in shifts], 95)
    times = np.arange(len(total)) / rate
    smooth = signal.sosfiltfilt(signal.butter(3, BREATH_LOWPASS_PER_MIN / MINUTE, fs=rate,
                                              output="sos"), total)
    breaths = detect_breaths(smooth, times)
    intervals = np.diff([b.end_inspiration_s for b in breaths])
    segments = []
    for part in np.array_split(np.arange(len(x)), 4):
        f_seg, p_seg = periodogram(total[part], rate)
        _, q_seg = periodogram(x[part], rate)
        segments.append({"from_s": round(part[0] / rate, 1),
                         "breath_peak_per_min": round(_peak(f_seg, p_seg, lo_r, hi_r), 2),
                         "line_per_min": round(_peak(f_seg, q_seg, line - 5, line + 5), 2)})
    result: dict[str, Any] = {
        "frame_rate": rate, "frames": int(len(total)), "seconds": round(len(total) / rate, 1),
        "resolution_per_min": round(rate / len(total) * MINUTE, 3),
        "global_breath_peak_per_min": round(breath, 2),
        "breaths": len(breaths), "breaths_per_min": round(
            MINUTE * (len(breaths) - 1) / (breaths[-1].start_s - breaths[0].start_s), 2)
        if len(breaths) > 1 else None,
        "breath_interval_cv": round(float(intervals.std() / intervals.mean()), 3)
        if intervals.size else None,
        "heart_band_line_per_min": round(line, 2),
        "line_over_breath_peak": round(line / breath, 3),
        "carrier_channel": carrier,
        "carrier_electrodes": _electrodes(protocol, carrier) if protocol else None,
        "carrier_line_share": float(p_carrier[near].sum() / p_carrier.sum()),
        "harmonics": harmonics,
        "line_period_s": round(float(periods.mean()), 4),
        "line_period_cv": round(float(periods.std() / periods.mean()), 4),
        "third_harmonic_phase_lock": lock3,
        "line_lock_to_3x_breathing": round(lock(line_phase), 3),
        "line_lock_chance_95pct": round(float(chance), 3),
        "segments": segments,
    }
    if stated_heart_per_min:
        s = stated_heart_per_min
        around = _band(freqs, s - 5, s + 5) & np.all(
            [np.abs(freqs - k * line) > 1.5 * k for k in range(1, 6)], axis=0)
        result["stated_heart_per_min"] = s
        result["global_peak_near_stated_over_noise_peak"] = round(
            float(p_total[around].max() / _noise_peak(freqs, p_total)), 2)
        result["carrier_peak_near_stated_over_noise_peak"] = round(
            float(p_carrier[around].max() / _noise_peak(freqs, p_carrier)), 2)
        result["frame_rate_for_stated_heart"] = round(rate * s / line, 2)
        result["breath_peak_at_that_frame_rate_per_min"] = round(breath * s / line, 1)
    if stated_respiratory_per_min:
        result["stated_respiratory_per_min"] = stated_respiratory_per_min
        result["frame_rate_for_stated_respiration"] = round(
            rate * stated_respiratory_per_min / breath, 2)
    result["spectra"] = {"per_min": freqs, "global": p_total, "difference": difference,
                         "carrier": p_carrier}
    return result


def run(entry: RealRecording, data_dir: Path, out_dir: Path) -> dict[str, Any]:
    """The evidence on one recording: heart-evidence.png and heart-evidence.json in
    `out_dir` (with the attribution); returns the report."""
    device = read_get(data_dir / entry.path)
    if device.frame_rate is None:
        raise ValueError(f"{entry.path}: no frame rate stated")
    protocol = device.protocol if isinstance(device.protocol, dict) else None
    result = evidence(device.voltages, device.frame_rate, entry.subject,
                      entry.stated_heart_per_min, entry.stated_respiratory_per_min, protocol)
    out_dir.mkdir(parents=True, exist_ok=True)
    figure(result, entry, out_dir / "heart-evidence.png")
    report = {k: v for k, v in result.items() if k != "spectra"}
    report.update(recording=entry.name, attribution=entry.attribution, license=LICENSE)
    (out_dir / "heart-evidence.json").write_text(json.dumps(report, indent=2))
    return report


def figure(result: dict[str, Any], entry: RealRecording, out_path: Path) -> None:
    """Three spectra (global, the carrier channel, the detector's difference) with the stated
    and found rates marked, and the recording's attribution."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    spectra = result["spectra"]
    freqs = spectra["per_min"]
    shown = freqs <= 220
    fig = Figure(figsize=(11, 9), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(3, 1, sharex=True)
    panels = [("global", "global curve Σ Δv/v (all 208 channels)"),
              ("carrier", f"channel {result['carrier_channel']} (most of its power in the line)"),
              ("difference", "detector's spectrum on channels: mean unit-sum channel spectrum "
                             "minus the global one")]
    lo_h, hi_h = RATE_LIMITS_PER_MIN["adult"]["heart"]
    for ax, (key, title) in zip(axes, panels, strict=True):
        p = spectra[key][shown]
        if key == "difference":
            ax.plot(freqs[shown], p, lw=0.8)
            ax.axvspan(lo_h, hi_h, color="0.9", zorder=0, label="heart band searched (adult)")
        else:
            ax.semilogy(freqs[shown], p / p.max(), lw=0.8)
        line = result["heart_band_line_per_min"]
        for k in range(1, 5):
            ax.axvline(k * line, color="tab:red", ls=":", lw=0.8,
                       label=f"line found {line:.1f}/min and harmonics" if k == 1 else None)
        if result.get("stated_heart_per_min"):
            ax.axvline(result["stated_heart_per_min"], color="tab:green", lw=1.2,
                       label=f"stated heart rate {result['stated_heart_per_min']:.0f}/min")
        if result.get("stated_respiratory_per_min"):
            ax.axvline(result["stated_respiratory_per_min"], color="tab:purple", lw=1.2,
                       label=f"stated ventilator rate {result['stated_respiratory_per_min']:.0f}"
                             "/min")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="upper right")
    axes[2].legend(fontsize=7, loc="upper right")
    axes[2].set_xlabel(f"per minute (frame rate {result['frame_rate']:g}/s as stated)")
    text = (f"{entry.name}: {result['frames']} frames, periodograms (Hann, whole record). "
            f"{entry.attribution} {LICENSE}")
    fig.supxlabel("\n".join(textwrap.wrap(text, 170)), fontsize=7)
    fig.savefig(out_path)
