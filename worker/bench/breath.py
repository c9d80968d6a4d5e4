"""Breath-synchronous D2IP benchmark (`eitmon bench breath`, issue 15 §1).

A simulated `tidal-breathing` recording is played through the worker's breath scheduling
(`worker.runtime.breath.BreathPolicy`, the code the compute thread runs under the `breath`
policy) on a virtual clock: frame i arrives at its frame time; the compute thread takes it at
max(arrival, the end of its previous work), previews it for its global impedance, feeds the
tracker, at each confirmed end-inspiration runs the main method on the breath's tidal
difference, and at each breath's end computes its parameters; every step advances the clock
by its real wall time on this machine. Frames are taken in batches, as the compute thread
takes them: all those that arrived while it was busy; of several end-inspirations confirmed in
one batch only the newest is reconstructed (`newest_tidal`), the others are reported as
skipped. So the delay of a breath's tidal image after its
end-inspiration (the peak frame's time) is what a worker on this machine would show, without
waiting for the recording in real time.

Per breath: the delay, the main method's iterations and seconds, and its tidal image's
MSSIM / CC / ERR against the truth's tidal image (truth at the same two frames), next to the
Tikhonov tidal image's (the preview's tidal difference; Tikhonov is linear, so it equals
Tikhonov on the tidal difference). Breaths whose truth depth differs from the median by more
than `IRREGULAR` are flagged; the first `FIRST_BREATHS` after the warm start are reported
apart.
"""

from __future__ import annotations

import datetime
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from worker.bench.quality import Setup, model_of, recording_for
from worker.metrics import score
from worker.recon.base import create, normalise
from worker.runtime.breath import BreathEnd, BreathPolicy, Tidal, newest_tidal
from worker.ventilation.signal import global_impedance

CASE = "tidal-breathing"
IRREGULAR = 0.15  # |depth / median depth - 1| above this: an irregular breath
FIRST_BREATHS = 3  # reported apart: the breaths right after the warm start
METRICS = ("mssim", "cc", "err")


@dataclass(frozen=True)
class BreathBench:
    """What is run: the recording's length, the main method and its options."""

    duration_s: float = 190.0
    method: str = "d2ip"
    options: dict[str, Any] = field(default_factory=dict)
    snr_db: float = 50.0
    seed: int = 0


def _scores(volume: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    mean = score(volume, truth, mask)["mean"]
    return {m: float(mean[m]) for m in METRICS}


def run(bench: BreathBench, device: str = "cpu", log: Any = None) -> dict[str, Any]:
    """Play the recording through the breath scheduling; the per-breath rows and summary."""
    setup = Setup(frames=int(round(bench.duration_s * 20)), snr_db=bench.snr_db,
                  seed=bench.seed)
    rec = recording_for(CASE, setup)
    assert rec.truth is not None
    model = model_of(rec)
    dvs = normalise(rec.voltages, rec.reference)
    preview = create("tikhonov", model)
    main = create(bench.method, model, device=device, **bench.options)
    policy = BreathPolicy.for_model(model)
    times = rec.frame_times - rec.frame_times[0]
    clock, rows, costs = 0.0, [], []

    def previews(frames: np.ndarray) -> np.ndarray:  # as the compute thread does
        return np.stack([r.volume for r in preview.push_many(frames)])

    skipped = []
    i = 0
    while i < len(dvs):  # one batch: the frames that arrived while the last one was processed
        clock = max(clock, float(times[i]))
        batch = range(i, max(i + 1, int(np.searchsorted(times, clock, side="right"))))
        t0 = time.perf_counter()
        values = global_impedance(previews(dvs[batch.start:batch.stop]), model.mask)
        events = [e for k, v in zip(batch, values, strict=True)
                  for e in policy.tracker.push(str(k), k, float(times[k]), dvs[k], float(v))]
        clock += time.perf_counter() - t0
        chosen = newest_tidal(events)
        for event in events:
            if isinstance(event, BreathEnd):
                t0 = time.perf_counter()
                policy.parameters.breath(event, previews(np.stack([s.dv for s in event.samples])),
                                         bench.method, "tikhonov")
                costs.append(time.perf_counter() - t0)
                clock += costs[-1]
            elif event is not chosen:
                skipped.append(event.inspiration.timestamp)
            else:
                rows.append(_tidal_row(event, main, preview, rec.truth, model.mask, clock))
                policy.parameters.record_tidal(event, rows[-1].pop("volume"))
                clock = rows[-1]["done_s"]
                if log is not None:
                    log(_line(rows[-1]))
        i = batch.stop
    report = _report(bench, rows, rec, main)
    report["parameters_s"] = float(np.mean(costs)) if costs else None
    report["skipped_end_inspiration_s"] = skipped
    return report


def _tidal_row(event: Tidal, main: Any, preview: Any, truth: np.ndarray, mask: np.ndarray,
               clock: float) -> dict[str, Any]:
    exp, insp = event.expiration.index, event.inspiration.index
    res = main.push(event.dv)
    done = clock + res.milliseconds / 1000
    truth_tidal = truth[insp] - truth[exp]
    return {"expiration_frame": exp, "inspiration_frame": insp,
            "end_inspiration_s": event.inspiration.timestamp,
            "confirmed_s": clock, "done_s": done, "delay_s": done - event.inspiration.timestamp,
            "iterations": int(res.iterations), "seconds": res.milliseconds / 1000,
            "depth": float(-truth_tidal[mask].sum()),
            "main": _scores(res.volume, truth_tidal, mask),
            "tikhonov": _scores(preview.push(event.dv).volume, truth_tidal, mask),
            "volume": res.volume}


def _line(row: dict[str, Any]) -> str:
    return (f"breath at {row['end_inspiration_s']:7.2f} s: delay {row['delay_s']:5.2f} s, "
            f"{row['iterations']:4d} it, {row['seconds']:5.2f} s, MSSIM {row['main']['mssim']:.3f}"
            f" (Tikhonov {row['tikhonov']['mssim']:.3f})")


def _means(rows: list[dict[str, Any]]) -> dict[str, Any]:
    if not rows:
        return {}
    return {"breaths": len(rows),
            **{f"{who}_{m}": float(np.nanmean([r[who][m] for r in rows]))
               for who in ("main", "tikhonov") for m in METRICS},
            "delay_s": float(np.mean([r["delay_s"] for r in rows])),
            "max_delay_s": float(np.max([r["delay_s"] for r in rows])),
            "iterations": float(np.mean([r["iterations"] for r in rows])),
            "seconds": float(np.mean([r["seconds"] for r in rows]))}


def _report(bench: BreathBench, rows: list[dict[str, Any]], rec: Any, main: Any
            ) -> dict[str, Any]:
    depth = np.median([r["depth"] for r in rows]) if rows else 0.0
    for k, r in enumerate(rows):
        r["index"] = k
        r["irregular"] = bool(depth and abs(r["depth"] / depth - 1) > IRREGULAR)
        r["first"] = k < FIRST_BREATHS
    periods = np.diff([r["end_inspiration_s"] for r in rows])
    third = max(1, len(rows) // 3)
    overall = _means(rows)
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "case": CASE, "duration_s": float(rec.frame_times[-1] - rec.frame_times[0]),
        "frames": int(rec.n_frames), "grid": list(rec.mask.shape), "method": bench.method,
        "options": bench.options, "settings": main.settings,
        "breath_period_s": float(np.median(periods)) if periods.size else None,
        "rows": rows,
        "summary": {
            "all": overall,
            "after_first": _means([r for r in rows if not r["first"]]),
            "first": _means([r for r in rows if r["first"]]),
            "irregular": _means([r for r in rows if r["irregular"]]),
            "regular": _means([r for r in rows if not r["irregular"]]),
            "first_third_delay_s": _means(rows[:third]).get("delay_s"),
            "last_third_delay_s": _means(rows[-third:]).get("delay_s"),
            "mssim_ratio": (overall["main_mssim"] / overall["tikhonov_mssim"]
                            if rows else None),
        },
    }


def markdown(report: dict[str, Any]) -> str:
    """The per-breath table and the summary lines."""
    lines = ["| breath | end-insp. (s) | delay (s) | iterations | s | MSSIM / CC / ERR "
             f"{report['method']} | MSSIM / CC / ERR Tikhonov | notes |",
             "|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        notes = ", ".join(n for n, on in (("first after warm start", r["first"]),
                                          ("irregular depth", r["irregular"])) if on)
        lines.append(
            f"| {r['index']} | {r['end_inspiration_s']:.2f} | {r['delay_s']:.2f} | "
            f"{r['iterations']} | {r['seconds']:.2f} | "
            + " / ".join(f"{r['main'][m]:.3f}" for m in METRICS) + " | "
            + " / ".join(f"{r['tikhonov'][m]:.3f}" for m in METRICS) + f" | {notes} |")
    lines += ["", "| breaths | count | delay mean / max (s) | iterations | MSSIM main / Tikhonov "
              "| CC main / Tikhonov | ERR main / Tikhonov |", "|---|---|---|---|---|---|---|"]
    for name, m in report["summary"].items():
        if not isinstance(m, dict) or not m:
            continue
        lines.append(f"| {name} | {m['breaths']} | {m['delay_s']:.2f} / {m['max_delay_s']:.2f} "
                     f"| {m['iterations']:.0f} | "
                     + " | ".join(f"{m['main_' + k]:.3f} / {m['tikhonov_' + k]:.3f}"
                                  for k in METRICS) + " |")
    s = report["summary"]
    lines += ["", f"MSSIM ratio {report['method']} / Tikhonov: {s['mssim_ratio']:.2f}; "
              f"mean delay first third {s['first_third_delay_s']:.2f} s, last third "
              f"{s['last_third_delay_s']:.2f} s; breath period {report['breath_period_s']:.2f} s; "
              f"{len(report.get('skipped_end_inspiration_s', []))} breaths skipped (the main "
              "method was busy)"]
    return "\n".join(lines) + "\n"


def benchmark(bench: BreathBench, out: Path, device: str = "cpu", log: Any = None
              ) -> dict[str, Any]:
    """Run, and write `breath.json` and `breath.md` under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    report = run(bench, device, log)
    (out / "breath.json").write_text(json.dumps(report, indent=1, default=str))
    (out / "breath.md").write_text(markdown(report))
    return report
