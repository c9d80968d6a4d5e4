"""Per-breath ventilation parameters of a volume series, and their summary.

`analyse(volumes, frame_times, body_mask, space)` runs the whole chain on (T, P, R, C) volumes
of Δσ/σ0:

1. voxel impedance -Δσ/σ0 inside the body (`signal`);
2. respiratory and heart rate (`heart.detect_rates`); the heart's harmonics are filtered out
   of every voxel (`heart.mdn_filter`) when the recording is long enough and the two rates
   are distinct;
3. breaths on the summed (global) curve (`breaths.detect_breaths`);
4. the lung region from the mean tidal image (`lung_mask.lung_region`);
5. per breath: the tidal image (voxel impedance at the end of inspiration minus at its start),
   TIV (the same over the lung region, eitprocessing's "inspiratory" TIV), EELI (the lung
   region's global impedance at the breath's end, eitprocessing's EELI) and ΔEELI against the
   baseline, the rate 60/duration, the regional parameters (`regional.regional`) and the
   regional ventilation delay (`regional.ventilation_delay`).

`breath_parameters` computes one breath from its data alone, for callers that already know
the breath (the live worker when a breath ends).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from worker.ventilation.breaths import Breath, BreathDetectionSettings, detect_breaths
from worker.ventilation.heart import MIN_WELCH_WINDOW_S, Rates, detect_rates, mdn_filter
from worker.ventilation.lung_mask import LUNG_FRACTION, lung_region
from worker.ventilation.regional import (
    RVD_THRESHOLD,
    SILENT_FRACTION,
    Regional,
    regional,
    ventilation_delay,
)
from worker.ventilation.signal import GLOBAL_UNIT, VOXEL_UNIT, sample_frequency, voxel_impedance
from worker.ventilation.space import VoxelSpace

# the scalar fields of a breath, in table and CSV order
SCALAR_FIELDS = (
    "index", "start_s", "end_inspiration_s", "end_s", "duration_s", "rate_per_min", "tiv",
    "eeli", "delta_eeli", "left_pct", "right_pct", "ventral_pct", "dorsal_pct", "caudal_pct",
    "cranial_pct", "cov_x_pct", "cov_y_pct", "cov_z_pct", "gi", "silent_pct",
    "silent_dependent_pct", "silent_nondependent_pct", "dependent_pct", "nondependent_pct",
    "cov_gravity_pct", "rvd_spread_pct",
)
UNITS = {
    "start_s": "s", "end_inspiration_s": "s", "end_s": "s", "duration_s": "s",
    "rate_per_min": "1/min", "tiv": GLOBAL_UNIT, "eeli": GLOBAL_UNIT, "delta_eeli": GLOBAL_UNIT,
    "tidal_image": VOXEL_UNIT, "gi": "1", "rvd": "% of inspiration time",
    "rvd_spread_pct": "% of inspiration time", "*_pct": "% (of TIV, of lung voxels, or of "
    "the lung extent)",
}


@dataclass(frozen=True)
class AnalysisSettings:
    """Every choice of the chain; defaults are documented in docs/ventilation.md."""

    breath_detection: BreathDetectionSettings = field(default_factory=BreathDetectionSettings)
    lung_fraction: float = LUNG_FRACTION
    mirror_lung: bool = True
    silent_fraction: float = SILENT_FRACTION
    position: str = "supine"
    rvd_threshold: float = RVD_THRESHOLD
    eeli_baseline: Literal["first", "reference"] | float = "first"
    heart_filter: bool = True
    subject: Literal["adult", "neonate"] = "adult"


@dataclass(frozen=True)
class BreathParameters:
    """One breath: timing, global values and the regional parameters of its tidal image."""

    index: int
    breath: Breath
    tiv: float
    eeli: float
    delta_eeli: float
    regional: Regional
    rvd_spread_pct: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the scalar fields, then the lists and mappings."""
        reg = self.regional
        out: dict[str, Any] = {
            "index": self.index, "start_s": self.breath.start_s,
            "end_inspiration_s": self.breath.end_inspiration_s, "end_s": self.breath.end_s,
            "duration_s": self.breath.duration_s, "rate_per_min": 60.0 / self.breath.duration_s,
            "tiv": self.tiv, "eeli": self.eeli, "delta_eeli": self.delta_eeli,
            **reg.scalars(), "rvd_spread_pct": self.rvd_spread_pct,
        }
        out["frames"] = {"start": self.breath.start, "end_inspiration":
                         self.breath.end_inspiration, "end": self.breath.end}
        out["layer_pct"] = list(reg.layer_pct)
        out["quadrant_pct"] = dict(reg.quadrant_pct)
        out["plane_pct"] = list(reg.plane_pct)
        out["ring_planes"] = [dataclasses.asdict(ring) for ring in reg.ring_planes]
        return out


@dataclass
class Analysis:
    """The parameters of a recording: per breath, images, and the summary."""

    breaths: list[BreathParameters]
    tidal_images: np.ndarray  # (B, P, R, C), VOXEL_UNIT
    rvd_images: np.ndarray  # (B, P, R, C), % of inspiration time; nan outside the lung
    lung_mask: np.ndarray  # (P, R, C)
    global_curve: np.ndarray  # (T,), over the lung region, GLOBAL_UNIT
    frame_times: np.ndarray
    rates: Rates | None
    heart_filtered: bool
    eeli_baseline: float
    settings: AnalysisSettings
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Means over the breaths of every scalar field, rates per minute, and context."""
        rows = [b.as_dict() for b in self.breaths]
        means = {name: float(np.nanmean([row[name] for row in rows])) if rows else None
                 for name in SCALAR_FIELDS if name not in ("index", "start_s",
                                                           "end_inspiration_s", "end_s")}
        durations = [b.breath.duration_s for b in self.breaths]
        return {
            "breaths": len(self.breaths),
            "respiratory_rate_per_min": 60.0 / float(np.mean(durations)) if durations else None,
            "spectral_respiratory_rate_per_min":
                self.rates.respiratory_per_min if self.rates else None,
            "heart_rate_per_min": self.rates.heart_per_min if self.rates else None,
            "heart_filtered": self.heart_filtered,
            "mean": means,
            "eeli_baseline": self.eeli_baseline,
            "lung_voxels": int(self.lung_mask.sum()),
            "duration_s": float(self.frame_times[-1] - self.frame_times[0]),
            "position": self.settings.position,
            "units": UNITS,
            "notes": list(self.notes),
        }

    def as_dict(self) -> dict[str, Any]:
        return {"breaths": [b.as_dict() for b in self.breaths], "summary": self.summary()}


def breath_parameters(index: int, breath: Breath, voxels: np.ndarray, lung_curve: np.ndarray,
                      lung: np.ndarray, body_mask: np.ndarray, space: VoxelSpace,
                      frame_times: np.ndarray, eeli_baseline: float,
                      ring_z: tuple[float, ...] = (),
                      settings: AnalysisSettings | None = None,
                      ) -> tuple[BreathParameters, np.ndarray, np.ndarray]:
    """(parameters, tidal image, RVD image) of one breath, from the (T, V) body-voxel impedance
    `voxels` and the lung region's global curve."""
    settings = settings or AnalysisSettings()
    tidal = np.zeros(body_mask.shape)
    tidal[body_mask] = voxels[breath.end_inspiration] - voxels[breath.start]
    window = slice(breath.start, breath.end_inspiration + 1)
    rvd = np.full(body_mask.shape, np.nan)
    rvd[body_mask] = ventilation_delay(voxels[window], frame_times[window],
                                       settings.rvd_threshold)
    rvd[~lung] = np.nan
    lung_rvd = rvd[lung]
    spread = float(np.nanstd(lung_rvd)) if np.isfinite(lung_rvd).any() else float("nan")
    eeli = float(lung_curve[breath.end])
    params = BreathParameters(
        index=index, breath=breath,
        tiv=float(lung_curve[breath.end_inspiration] - lung_curve[breath.start]),
        eeli=eeli, delta_eeli=eeli - eeli_baseline,
        regional=regional(tidal, lung, space, ring_z, settings.position,
                          settings.silent_fraction),
        rvd_spread_pct=spread)
    return params, tidal, rvd


def _rates_and_filter(voxels: np.ndarray, rate: float, settings: AnalysisSettings,
                      notes: list[str]) -> tuple[np.ndarray, Rates | None, bool]:
    duration = voxels.shape[0] / rate
    if duration < MIN_WELCH_WINDOW_S:
        notes.append(f"recording of {duration:.1f} s is shorter than {MIN_WELCH_WINDOW_S:.0f} "
                     "s: no rate detection, no heart filter")
        return voxels, None, False
    if not np.ptp(voxels.sum(axis=1)) > 0:
        notes.append("the global curve is constant: no rate detection, no heart filter")
        return voxels, None, False
    rates = detect_rates(voxels, rate, settings.subject)
    if not settings.heart_filter:
        return voxels, rates, False
    if rates.heart_hz <= rates.respiratory_hz:
        notes.append("heart rate not above the respiratory rate: no heart filter")
        return voxels, rates, False
    return mdn_filter(voxels, rate, rates, axis=0), rates, True


def analyse(volumes: np.ndarray, frame_times: np.ndarray, body_mask: np.ndarray,
            space: VoxelSpace, ring_z: tuple[float, ...] = (),
            settings: AnalysisSettings | None = None) -> Analysis:
    """Every breath's parameters of (T, P, R, C) volumes (Δσ/σ0) at `frame_times` (s)."""
    settings = settings or AnalysisSettings()
    frame_times = np.asarray(frame_times, dtype=np.float64)
    if volumes.shape[0] != frame_times.size:
        raise ValueError(f"{volumes.shape[0]} volumes but {frame_times.size} frame times")
    if space.shape != body_mask.shape:
        raise ValueError(f"space {space.shape} does not match the mask {body_mask.shape}")
    rate = sample_frequency(frame_times)
    notes: list[str] = []
    voxels, rates, filtered = _rates_and_filter(voxel_impedance(volumes, body_mask), rate,
                                                settings, notes)
    breaths = detect_breaths(voxels.sum(axis=1), frame_times, settings.breath_detection)
    empty = np.zeros((0, *body_mask.shape))
    if not breaths:
        notes.append("no complete breath (valley - peak - valley) was detected")
        return Analysis([], empty, empty, np.zeros_like(body_mask), voxels.sum(axis=1),
                        frame_times, rates, filtered, float("nan"), settings, notes)
    tiv = np.stack([voxels[b.end_inspiration] - voxels[b.start] for b in breaths]).mean(axis=0)
    tiv_image = np.zeros(body_mask.shape)
    tiv_image[body_mask] = tiv
    lung = lung_region(tiv_image, body_mask, space, settings.lung_fraction, settings.mirror_lung)
    lung_curve = voxels[:, lung[body_mask]].sum(axis=1)
    baseline = settings.eeli_baseline
    baseline = (float(lung_curve[breaths[0].end]) if baseline == "first"
                else 0.0 if baseline == "reference" else float(baseline))
    results = [breath_parameters(k, b, voxels, lung_curve, lung, body_mask, space, frame_times,
                                 baseline, ring_z, settings) for k, b in enumerate(breaths)]
    return Analysis(
        breaths=[r[0] for r in results], tidal_images=np.stack([r[1] for r in results]),
        rvd_images=np.stack([r[2] for r in results]), lung_mask=lung, global_curve=lung_curve,
        frame_times=frame_times, rates=rates, heart_filtered=filtered, eeli_baseline=baseline,
        settings=settings, notes=notes)
