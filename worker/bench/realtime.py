"""Real-time benchmark of `d2ip-live` (`eitmon bench realtime`, issue 17 §2).

Each case's recording is played at its frame rate through the worker's `realtime` scheduling
on a virtual clock, as the compute thread runs it (`worker.runtime.compute`): when a session's
frames have arrived, the newest is reconstructed and the older ones are coalesced; when no frame
waits, one `background_step()` of one session in turn (`d2ip-live`'s fine-tuning), if it should
end before the next frame is due (`worker.runtime.pacing`, forecast from the arrivals seen so
far); when no method has background work or none may start, the clock jumps to the next
arrival. Every step advances the clock
by its real wall time on this machine, so the latency of a frame (its arrival to its volume
out) is what a worker on this machine would show, without playing the recording in real time
(the method as in `worker/bench/breath.py`). With N sessions on one worker, session s's belt
is offset by s/N of a frame period, and all N play the same recording.

Per method: latency p50/p99 (ms), the lag trend (slope of the latency over the recording,
ms per minute: a growing lag has a positive slope), the frames reconstructed and coalesced,
and MSSIM / CC / ERR means over the frames it reconstructed, against the truth of those
frames with one ruler (the data range of the whole recording's truth, `worker.metrics`).
Methods: `d2ip-live`; `d2ip-live` with the fine-tuning off (the network as it starts);
D2IP with the paper's fixed schedule under the same scheduling (so scored on the frames it
reconstructs); the Tikhonov preview on every frame. `d2ip-live` is also scored on D2IP's
frames alone. Starvation: `d2ip-live` with N = 2, 4, 8 sessions on one worker; and, apart from
the machine's load, every frame of a short span reconstructed with K fine-tuning steps after
each (`run_budget`: K = 0 is the network as it starts, a fully starved loop).
"""

from __future__ import annotations

import datetime
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from worker.bench.quality import Setup, model_of, recording_for
from worker.metrics import cc, data_range, err, mssim, ssim_window
from worker.recon.base import StreamingReconstructor, create, normalise
from worker.runtime.pacing import FrameForecast, StepPacer

CASES = ("tidal-breathing", "healthy-deep-breath", "edema-left")
TIDAL_FRAMES = 3800  # the cached 190 s tidal-breathing simulation (the breath benchmark's)
METRICS = ("mssim", "cc", "err")


@dataclass(frozen=True)
class RealtimeBench:
    """What is run: the tidal recording's length, the sessions of the starvation runs and how
    long each plays, the cases."""

    duration_s: float = 120.0
    sessions: tuple[int, ...] = (2, 4, 8)
    starved_s: float = 30.0
    budget_s: float = 5.0
    budget_steps: tuple[int, ...] = (0, 1, 3, 10)
    cases: tuple[str, ...] = CASES
    live_options: dict[str, Any] = field(default_factory=dict)
    snr_db: float = 50.0
    seed: int = 0


@dataclass
class Played:
    """One session's reconstructed frames: index, latency (s), the three scores."""

    index: list[int] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    scores: list[dict[str, float]] = field(default_factory=list)
    coalesced: int = 0
    background_steps: int = 0


class Scorer:
    """Scores volumes against the truth of their frame with the recording's one ruler."""

    def __init__(self, truth: np.ndarray, mask: np.ndarray) -> None:
        self.truth, self.mask = truth, mask
        self.range = data_range(truth, mask)
        self.window = ssim_window(mask.shape)

    def __call__(self, volume: np.ndarray, k: int) -> dict[str, float]:
        x, t = volume.astype(np.float64), self.truth[k].astype(np.float64)
        return {"mssim": mssim(x, t, self.mask, self.range, self.window),
                "cc": cc(x[self.mask], t[self.mask]), "err": err(x[self.mask], t[self.mask])}


def play(recons: list[StreamingReconstructor], dvs: np.ndarray, times: np.ndarray,
         scorer: Scorer, background: bool = True) -> list[Played]:
    """The realtime scheduling of N sessions on one worker, on the virtual clock (module
    docstring); scoring happens outside the clock."""
    n, total = len(recons), len(dvs)
    arrivals = [times + s * (times[1] - times[0]) / n for s in range(n)]
    played = [Played() for _ in recons]
    forecasts = [FrameForecast() for _ in recons]
    pacer = StepPacer()
    nxt = [0] * n
    clock, turn = 0.0, 0
    while min(nxt) < total:
        pushed = False
        for s, recon in enumerate(recons):
            ready = int(np.searchsorted(arrivals[s], clock, side="right"))
            if nxt[s] >= ready:
                continue
            k = ready - 1
            forecasts[s].seen(float(arrivals[s][k]), clock)
            t0 = time.perf_counter()
            volume = recon.push(dvs[k]).volume
            clock += time.perf_counter() - t0
            out = played[s]
            out.coalesced += k - nxt[s]
            out.index.append(k)
            out.latency.append(clock - float(arrivals[s][k]))
            out.scores.append(scorer(volume, k))
            nxt[s], pushed = k + 1, True
        if pushed:
            continue
        stepped = False
        paced = pacer.may_start(clock, (f.next_due(clock) for f in forecasts))
        for j in range(n if background and paced else 0):
            s = (turn + j) % n
            t0 = time.perf_counter()
            stepped = recons[s].background_step()
            took = time.perf_counter() - t0
            clock += took
            if stepped:
                pacer.took(took)
                played[s].background_steps += 1
                turn = (s + 1) % n
                break
        if not stepped:
            clock = max(clock, min(float(arrivals[s][nxt[s]]) for s in range(n)
                                   if nxt[s] < total))
    return played


def summary(played: list[Played], times: np.ndarray, only: set[int] | None = None
            ) -> dict[str, Any]:
    """Latency percentiles and lag trend, frames, scores (means over sessions' frames)."""
    rows = [(k, lat, sc) for p in played
            for k, lat, sc in zip(p.index, p.latency, p.scores, strict=True)
            if only is None or k in only]
    if not rows:
        return {"frames": 0}
    idx = np.array([r[0] for r in rows])
    lat = 1e3 * np.array([r[1] for r in rows])
    slope = (float(np.polyfit(times[idx] / 60.0, lat, 1)[0])
             if len(set(idx.tolist())) > 2 else None)
    return {"latency_ms_p50": float(np.percentile(lat, 50)),
            "latency_ms_p99": float(np.percentile(lat, 99)),
            "latency_ms_max": float(lat.max()), "lag_slope_ms_per_min": slope,
            **{m: float(np.nanmean([r[2][m] for r in rows])) for m in METRICS},
            "err_median": float(np.nanmedian([r[2]["err"] for r in rows])),
            "frames": len(rows), "coalesced": int(sum(p.coalesced for p in played)),
            "background_steps": int(sum(p.background_steps for p in played)),
            "sessions": len(played)}


def case_recording(case: str, bench: RealtimeBench) -> Any:
    """The case's simulated recording (tidal-breathing cut to `duration_s`)."""
    frames = TIDAL_FRAMES if case == "tidal-breathing" else 20
    rec = recording_for(case, Setup(frames=frames, snr_db=bench.snr_db, seed=bench.seed),
                        progress=True)
    if case == "tidal-breathing":
        n = int(round(bench.duration_s * 20))
        if n > rec.n_frames:
            raise ValueError(f"duration: at most {rec.n_frames / 20:.0f} s of tidal-breathing")
        return rec, n
    return rec, rec.n_frames


def run_case(case: str, bench: RealtimeBench, device: str, log: Callable[[str], None]
             ) -> dict[str, Any]:
    """Every method on one case (module docstring)."""
    rec, n = case_recording(case, bench)
    assert rec.truth is not None
    model = model_of(rec)
    dvs = normalise(rec.voltages, rec.reference)[:n]
    times = (rec.frame_times - rec.frame_times[0])[:n]
    scorer = Scorer(rec.truth[:n], model.mask)
    methods: dict[str, Any] = {}
    played: dict[str, Played] = {}

    def one(name: str, recon: StreamingReconstructor, background: bool = True) -> None:
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        played[name] = play([recon], dvs, times, scorer, background)[0]
        methods[name] = {**summary([played[name]], times), "load_before": load,
                         "wall_s": time.perf_counter() - t0}
        log(f"{case} {name}: {_line(methods[name])}")

    live = create("d2ip-live", model, device=device, **bench.live_options)
    settings = live.settings
    one("d2ip-live", live)
    one("d2ip-live-frozen", create("d2ip-live", model, device=device, **bench.live_options),
        background=False)
    one("d2ip", create("d2ip", model, device=device))
    one("tikhonov", create("tikhonov", model))
    subset = summary([played["d2ip-live"]], times, set(played["d2ip"].index))
    methods["d2ip-live-on-d2ip-frames"] = {k: v for k, v in subset.items()  # whole-run counts
                                           if k not in ("coalesced", "background_steps")}
    return {"case": case, "frames": n, "duration_s": float(times[-1] + times[1]),
            "methods": methods, "settings": settings,
            "per_frame": {name: {"index": p.index, "latency_ms": [1e3 * x for x in p.latency],
                                 "mssim": [s["mssim"] for s in p.scores]}
                          for name, p in played.items()}}


def run_starved(bench: RealtimeBench, device: str, log: Callable[[str], None]
                ) -> dict[str, Any]:
    """`d2ip-live` with N sessions on one worker, N in `bench.sessions`, on the first
    `starved_s` seconds of tidal-breathing."""
    rec, _ = case_recording("tidal-breathing", bench)
    assert rec.truth is not None
    model = model_of(rec)
    n = int(round(bench.starved_s * 20))
    dvs = normalise(rec.voltages, rec.reference)[:n]
    times = (rec.frame_times - rec.frame_times[0])[:n]
    scorer = Scorer(rec.truth[:n], model.mask)
    out: dict[str, Any] = {}
    for sessions in (1, *bench.sessions):
        recons = [create("d2ip-live", model, device=device, **bench.live_options)
                  for _ in range(sessions)]
        load = os.getloadavg()[0]
        out[str(sessions)] = {**summary(play(recons, dvs, times, scorer), times),
                              "load_before": load}
        log(f"starved, {sessions} session(s): {_line(out[str(sessions)])}")
    return {"frames": n, "sessions": out}


def run_budget(bench: RealtimeBench, device: str, log: Callable[[str], None]
               ) -> dict[str, Any]:
    """Load-independent starvation: every frame of the first `budget_s` seconds of
    tidal-breathing reconstructed, with K fine-tuning steps after each, K in `budget_steps`."""
    rec, _ = case_recording("tidal-breathing", bench)
    assert rec.truth is not None
    model = model_of(rec)
    n = int(round(bench.budget_s * 20))
    dvs = normalise(rec.voltages, rec.reference)[:n]
    scorer = Scorer(rec.truth[:n], model.mask)
    out: dict[str, Any] = {}
    for steps in bench.budget_steps:
        recon = create("d2ip-live", model, device=device, **bench.live_options)
        scores = []
        for k, dv in enumerate(dvs):
            scores.append(scorer(recon.push(dv).volume, k))
            for _ in range(steps):
                recon.background_step()
        out[str(steps)] = {m: float(np.nanmean([s[m] for s in scores])) for m in METRICS}
        out[str(steps)]["err_median"] = float(np.nanmedian([s["err"] for s in scores]))
        log(f"{steps} fine-tuning steps per frame: {out[str(steps)]}")
    return {"frames": n, "steps_per_frame": out}


def _line(m: dict[str, Any]) -> str:
    if not m.get("frames"):
        return "no frames"
    return (f"{m['frames']} frames ({m['coalesced']} coalesced), latency p50/p99 "
            f"{m['latency_ms_p50']:.0f}/{m['latency_ms_p99']:.0f} ms, MSSIM {m['mssim']:.3f}, "
            f"CC {m['cc']:.3f}, ERR {m['err']:.3f}, {m['background_steps']} fine-tuning steps")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(row) + " |" for row in rows)]


def _scores(m: dict[str, Any]) -> list[str]:
    return [f"{m['mssim']:.3f}", f"{m['cc']:.3f}", f"{m['err']:.3f}"]


def _latency(m: dict[str, Any]) -> str:
    return f"{m['latency_ms_p50']:.0f} / {m['latency_ms_p99']:.0f}"


def markdown(report: dict[str, Any]) -> str:
    """The realtime table, the starvation tables and the conditions."""
    lines = _table(
        ["case", "method", "frames", "coalesced", "latency p50 / p99 (ms)",
         "lag slope (ms/min)", "MSSIM", "CC", "ERR", "fine-tuning steps"],
        [[case["case"], name, str(m["frames"]), str(m.get("coalesced", "-")), _latency(m),
          "-" if m.get("lag_slope_ms_per_min") is None
          else f"{m['lag_slope_ms_per_min']:.1f}", *_scores(m), str(m.get("background_steps", "-"))]
         for case in report["cases"] for name, m in case["methods"].items() if m.get("frames")])
    starved = report.get("starved")
    if starved:
        lines += ["", f"Starvation (tidal-breathing, first {starved['frames']} frames, "
                  "`d2ip-live` on every session):", ""]
        lines += _table(["sessions", "frames (all sessions)", "coalesced",
                         "latency p50 / p99 (ms)", "MSSIM", "CC", "ERR",
                         "fine-tuning steps per session"],
                        [[k, str(m["frames"]), str(m["coalesced"]), _latency(m), *_scores(m),
                          f"{m['background_steps'] / int(k):.0f}"]
                         for k, m in starved["sessions"].items()])
    budget = report.get("budget")
    if budget:
        lines += ["", f"Fine-tuning steps per frame (tidal-breathing, first {budget['frames']} "
                  "frames, every frame reconstructed, no clock):", ""]
        lines += _table(["steps per frame", "MSSIM", "CC", "ERR", "ERR median"],
                        [[k, *_scores(m), f"{m['err_median']:.3f}"]
                         for k, m in budget["steps_per_frame"].items()])
    lines += ["", f"{report['date']}, {report['cpus']} CPU(s), torch threads "
              f"{report['threads']}, load average {report['load_start']:.1f} at the start, "
              f"{report['load_end']:.1f} at the end."]
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    """Latency and MSSIM per frame over the tidal recording, by method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    case = next((c for c in report["cases"] if c["case"] == "tidal-breathing"),
                report["cases"][0])
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True)
    for name, frames in case["per_frame"].items():
        t = np.array(frames["index"]) / 20.0
        top.plot(t, frames["latency_ms"], ".", ms=2, label=name)
        bottom.plot(t, frames["mssim"], ".", ms=2, label=name)
    top.axhline(50, color="k", lw=0.8, ls="--")
    top.set_yscale("log")
    top.set_ylabel("latency (ms), goal 50")
    bottom.set_ylabel("MSSIM")
    bottom.set_xlabel(f"{case['case']}: frame time (s)")
    top.legend(markerscale=5, fontsize=8)
    top.set_title(f"eitmon bench realtime, {report['date']}, load {report['load_start']:.0f}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def benchmark(bench: RealtimeBench, out: Path, device: str = "cpu",
              log: Callable[[str], None] = print, threads: int = 1) -> dict[str, Any]:
    """Run every case and the starvation runs; write realtime.json, realtime.md and
    realtime.png under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()[0]
    cases = [run_case(case, bench, device, log) for case in bench.cases]
    starved = run_starved(bench, device, log) if bench.sessions else None
    budget = run_budget(bench, device, log) if bench.budget_steps else None
    report = {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
              "bench": asdict(bench), "cpus": os.cpu_count(), "threads": threads,
              "load_start": load_start, "load_end": os.getloadavg()[0],
              "cases": cases, "starved": starved, "budget": budget}
    (out / "realtime.json").write_text(json.dumps(report, indent=1, default=str))
    (out / "realtime.md").write_text(markdown(report))
    plot(report, out / "realtime.png")
    return report
