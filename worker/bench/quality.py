"""Reconstruction-quality benchmark: simulated cases, every registered method, one table.

Each case is simulated once (`worker.simulation`, fine mesh, noise; cached under
`<cache dir>/simulations/`, keyed by case, frames, SNR, seed and the resolved model specs),
every method reconstructs it frame by frame through the registry (so a newly registered method
joins by name), and the volumes are scored against the truth with `worker.metrics.score`
(means over the frames). `max_frames` caps the frames of every method alike, for the slow
iterative methods (`inr-tv`, `diff-inr`: tens of seconds to minutes a frame on one core):
every k-th frame ending at the last (`capped_frames`), so all rows of a run are scored on the
same frames and a carried method (D2IP's TPP, the INRs' weights) steps k frames at a time.
Seconds per frame are the methods' own `FrameResult.milliseconds`, mean over the frames, first
frame included. Tikhonov's throughput is measured separately on
the same model: `push` one frame at a time (R factored: an r x M and a V x r product each),
`push_dense` the same with the dense V x M matrix R (the form before the factoring), `push_many`
in batches, and the plain baseline, a float64 numpy pseudo-inverse `np.linalg.pinv(J) @ Δv` one
frame at a time, in interleaved rounds (medians reported).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from service.contract.geometry import resolve_geometry
from service.contract.grid import resolve_grid
from service.contract.protocol import resolve_protocol
from worker import storage
from worker.forward import load_model
from worker.forward.model import ForwardModel, model_spec
from worker.metrics import METRICS, score
from worker.plot import plot_volumes
from worker.recon.base import create, normalise, reconstruct_recording
from worker.recon.linear import LinearReconstructor
from worker.recon.tikhonov import Tikhonov
from worker.recording import Recording, cached_simulation

SIMULATION_KEY_LENGTH = 16
THROUGHPUT_FRAMES = 200
THROUGHPUT_ROUNDS = 5
THROUGHPUT_BATCH = 64


@dataclass(frozen=True)
class Setup:
    """What is simulated: the case parameters and the model they share."""

    frames: int | None = 20
    snr_db: float | None = 50.0
    seed: int = 0
    geometry: Any = None
    protocol: Any = None
    grid: Any = None


@dataclass
class CaseResult:
    case: str
    frames: int
    scored: list[int] = field(default_factory=list)  # the frame indices reconstructed
    rows: list[dict[str, Any]] = field(default_factory=list)


def capped_frames(n_frames: int, max_frames: int | None) -> np.ndarray:
    """Every k-th frame index ending at the last, k = ceil(n_frames / max_frames), at most
    `max_frames` of them; all frames when `max_frames` is None or not below n_frames."""
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames: must be at least 1, got {max_frames}")
    if max_frames is None or max_frames >= n_frames:
        return np.arange(n_frames)
    stride = -(-n_frames // max_frames)
    return np.arange(n_frames - 1, -1, -stride)[::-1][-max_frames:]


def recording_for(case: str, setup: Setup, progress: bool = False) -> Recording:
    """The simulated recording of `case`, from the simulation cache or simulated now."""
    from worker.simulation import simulate

    spec = model_spec(resolve_geometry(setup.geometry), resolve_protocol(setup.protocol),
                      resolve_grid(setup.grid))
    key = storage.content_key({"case": case, "frames": setup.frames, "snr_db": setup.snr_db,
                               "seed": setup.seed, **spec}, SIMULATION_KEY_LENGTH)

    def build() -> Recording:
        return simulate(case, snr_db=setup.snr_db, frames=setup.frames, seed=setup.seed,
                        geometry=setup.geometry, protocol=setup.protocol, grid=setup.grid,
                        progress=progress)

    return cached_simulation(f"{case}-{key}", build)


def run_case(case: str, methods: list[str], setup: Setup, out_dir: Path, device: str = "cpu",
             progress: bool = False, max_frames: int | None = None) -> CaseResult:
    """Reconstruct one case with every method (on `capped_frames`), score it, and draw
    `slices-<case>.png`; `rows-<case>.json` is rewritten after every method, so that a slow
    run stopped early keeps its finished rows."""
    rec = recording_for(case, setup, progress)
    model = model_of(rec)
    chosen = capped_frames(rec.n_frames, max_frames)
    truth = rec.truth[chosen]
    result = CaseResult(case=case, frames=rec.n_frames, scored=chosen.tolist())
    last = rec.n_frames - 1
    panels = [("truth", rec.truth[last])]
    for name in methods:
        recon = create(name, model, device=device)
        volumes, frames = reconstruct_recording(recon, rec.voltages[chosen], rec.reference,
                                                progress=progress)
        metrics = score(volumes, truth, rec.mask)["mean"]
        result.rows.append({"case": case, "method": name, **metrics,
                            "seconds_per_frame": float(np.mean([f.milliseconds for f in frames]))
                            / 1e3,
                            "iterations": float(np.mean([f.iterations for f in frames])),
                            "settings": recon.settings})
        panels.append((name, volumes[-1]))
        (out_dir / f"rows-{case}.json").write_text(json.dumps(result.rows, indent=2,
                                                              default=str))
    plot_volumes(panels, rec.mask, out_dir / f"slices-{case}.png",
                 frame_label=f"{case}: frame {last} of {rec.n_frames} (end of inhalation), "
                             f"{setup.snr_db} dB")
    return result


def model_of(rec: Recording) -> ForwardModel:
    """The reconstruction model named by a recording's meta."""
    return load_model(**{k: rec.meta[k] for k in ("geometry", "protocol", "grid")})


def _rate(frames: int, run: Callable[[], object]) -> float:
    """Frames per second of one timed call of `run` that handles `frames` frames."""
    t0 = time.perf_counter()
    run()
    return frames / (time.perf_counter() - t0)


def tikhonov_throughput(model: ForwardModel, frames: int = THROUGHPUT_FRAMES,
                        rounds: int = THROUGHPUT_ROUNDS, device: str = "cpu",
                        seed: int = 0) -> dict[str, Any]:
    """Frames per second of Tikhonov `push` (factored R), `push_dense` (dense R), `push_many`
    (batches) and the numpy pinv baseline.

    The three are measured in interleaved rounds and each reported as its median over the
    rounds, so that a burst of load on a shared machine hits all three alike.
    """
    rng = np.random.default_rng(seed)
    v0 = model.reference_voltages
    dv = normalise(v0 * (1 + 0.01 * rng.standard_normal((frames, v0.size))), v0)
    recon = create("tikhonov", model, device=device)
    assert isinstance(recon, Tikhonov)
    op = recon.operator
    dense = LinearReconstructor(model, op.matrix, op.residual, op.d * op.mu, device)
    pinv = np.linalg.pinv(model.jacobian)
    recon.push(dv[0])  # warm-up: first-call allocations
    dense.push(dv[0])
    rates: dict[str, list[float]] = {"push": [], "push_dense": [], "push_many": [], "pinv": []}
    for _ in range(rounds):
        rates["push"].append(_rate(frames, lambda: [recon.push(f) for f in dv]))
        rates["push_dense"].append(_rate(frames, lambda: [dense.push(f) for f in dv]))
        rates["push_many"].append(_rate(frames, lambda: [
            recon.push_many(dv[i:i + THROUGHPUT_BATCH]) for i in range(0, frames,
                                                                    THROUGHPUT_BATCH)]))
        rates["pinv"].append(_rate(frames, lambda: [pinv @ f for f in dv]))
    fps = {k: float(np.median(v)) for k, v in rates.items()}
    return {"grid": list(model.grid.shape), "n_voxels": model.n_voxels,
            "n_measurements": model.n_measurements, "device": device, "frames": frames,
            "rounds": rounds, "rank": recon.rank, "push_fps": fps["push"],
            "push_dense_fps": fps["push_dense"],
            "factored_vs_dense": fps["push"] / fps["push_dense"], "push_many_fps": fps["push_many"],
            "batch": THROUGHPUT_BATCH, "numpy_pinv_fps": fps["pinv"],
            "push_vs_pinv": fps["push"] / fps["pinv"]}


def benchmark(methods: list[str], cases: list[str], setup: Setup, out_dir: Path,
              device: str = "cpu", throughput: bool = True, progress: bool = False,
              threads: int | None = 1, max_frames: int | None = None) -> dict[str, Any]:
    """Run everything, write quality.json, quality.md and the figures; return the results.

    `threads`: torch threads for every method (None: as set), restored afterwards; one by
    default, because small ops on a shared 2-core machine run slower with two (docs/d2ip.md).
    `max_frames`: reconstruct and score only `capped_frames` of each case (every method)."""
    from worker.bench.speed import torch_threads

    out_dir.mkdir(parents=True, exist_ok=True)
    with torch_threads(threads):
        results = [run_case(c, methods, setup, out_dir, device, progress, max_frames)
                   for c in cases]
        report: dict[str, Any] = {
            "date": time.strftime("%Y-%m-%d"), "setup": asdict(setup), "device": device,
            "threads": threads, "rows": [row for r in results for row in r.rows],
            "frames": {r.case: r.frames for r in results}, "max_frames": max_frames,
            "scored_frames": {r.case: r.scored for r in results},
        }
        if throughput and "tikhonov" in methods:
            report["tikhonov_throughput"] = tikhonov_throughput(
                model_of(recording_for(cases[0], setup)), device=device)
    (out_dir / "quality.json").write_text(json.dumps(report, indent=2, default=str))
    (out_dir / "quality.md").write_text(markdown(report))
    return report


COLUMNS = (("case", "case"), ("method", "method"), ("cc", "CC ↑"), ("psnr", "PSNR dB ↑"),
           ("mssim", "MSSIM ↑"), ("err", "ERR ↓"), ("seconds_per_frame", "s/frame"),
           ("iterations", "iterations/frame"))


def cells(row: dict[str, Any]) -> list[str]:
    """The table cells of one row."""
    out = []
    for key, _ in COLUMNS:
        value = row[key]
        if key in METRICS:
            out.append(f"{value:.3f}" if key != "psnr" else f"{value:.2f}")
        elif key == "seconds_per_frame":
            out.append(f"{value:.4g}")
        elif key == "iterations":
            out.append(f"{value:.0f}")
        else:
            out.append(str(value))
    return out


def markdown(report: dict[str, Any]) -> str:
    """quality.md: the table plus the Tikhonov throughput line."""
    setup = report["setup"]
    lines = [f"# Reconstruction quality ({report['date']})", "",
             f"Simulated with `worker.simulation` at {setup['snr_db']} dB, seed {setup['seed']}; "
             f"frames per case: {report['frames']}; device {report['device']}, "
             f"torch threads {report.get('threads') or 'as set'}. Means over the "
             "frames, scored inside the body mask (`worker.metrics`)."
             + capped_line(report), "",
             "| " + " | ".join(title for _, title in COLUMNS) + " |",
             "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cells(row)) + " |" for row in report["rows"]]
    tp = report.get("tikhonov_throughput")
    if tp:
        lines += ["", throughput_line(tp)]
    return "\n".join(lines) + "\n"


def capped_line(report: dict[str, Any]) -> str:
    """' Frames reconstructed: ...' when `max_frames` capped them, else ''."""
    if report.get("max_frames") is None:
        return ""
    scored = "; ".join(f"{case} {', '.join(map(str, idx))}"
                       for case, idx in report["scored_frames"].items())
    return (f" Capped at {report['max_frames']} frames per case (`--max-frames`, every method "
            f"alike), frames reconstructed and scored: {scored}.")


def throughput_line(tp: dict[str, Any]) -> str:
    return (f"Tikhonov at grid {'x'.join(map(str, tp['grid']))} (V = {tp['n_voxels']}, "
            f"M = {tp['n_measurements']}, {tp['device']}): push {tp['push_fps']:.0f} frames/s "
            f"(R factored, r = {tp['rank']}: r x M and V x r float32 products), dense R "
            f"{tp['push_dense_fps']:.0f} frames/s (factored is {tp['factored_vs_dense']:.2f}x), "
            f"push_many {tp['push_many_fps']:.0f} frames/s "
            f"(batches of {tp['batch']}); baseline numpy float64 pinv(J) @ Δv "
            f"{tp['numpy_pinv_fps']:.0f} frames/s (push is {tp['push_vs_pinv']:.1f}x); medians "
            f"of {tp['rounds']} interleaved rounds of {tp['frames']} frames.")
