"""What carrying an INR's weights from frame to frame buys (issue 18, beyond the seed).

On the last `frames` frames of a simulated case (the `eitmon bench quality` simulation, from
its cache), one reconstructor carries its MLP from frame to frame (the default) and, on every
frame after the first, a second one starts from the initial network (`carry=False`, the
seed's way). Both are timed by the method itself (`FrameResult.milliseconds`) in the same
process, frame by frame alternately, and scored against the truth (`worker.metrics.score`).
The speed-up is cold / carried in iterations and in seconds, over the frames after the first.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from worker.bench.quality import Setup, model_of, recording_for
from worker.metrics import score
from worker.recon.base import create, normalise


def benchmark(case: str, method: str, frames: int, setup: Setup, out_dir: Path,
              threads: int | None = 1) -> dict[str, Any]:
    """Run carried and cold reconstructions; write carry.json; return the report."""
    from worker.bench.speed import torch_threads

    out_dir.mkdir(parents=True, exist_ok=True)
    rec = recording_for(case, setup, progress=True)
    model = model_of(rec)
    dv = normalise(rec.voltages, rec.reference)[-frames:]
    truth = rec.truth[-frames:]
    rows = []
    with torch_threads(threads):
        carried = create(method, model)
        for k, frame in enumerate(dv):
            warm = carried.push(frame)
            row = {"frame": rec.n_frames - frames + k, **_scored("carried", warm, truth[k],
                                                                  rec.mask)}
            if k > 0:
                cold = create(method, model, carry=False).push(frame)
                row.update(_scored("cold", cold, truth[k], rec.mask))
            rows.append(row)
    later = rows[1:]
    report = {"date": time.strftime("%Y-%m-%d"), "case": case, "method": method,
              "frames": frames, "threads": threads, "rows": rows,
              "iterations_ratio": float(np.mean([r["cold_iterations"] for r in later])
                                        / np.mean([r["carried_iterations"] for r in later])),
              "seconds_ratio": float(np.mean([r["cold_seconds"] for r in later])
                                     / np.mean([r["carried_seconds"] for r in later]))}
    (out_dir / "carry.json").write_text(json.dumps(report, indent=2))
    return report


def _scored(prefix: str, result: Any, truth: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    metrics = score(result.volume, truth, mask)["mean"]
    return {f"{prefix}_iterations": result.iterations,
            f"{prefix}_seconds": result.milliseconds / 1e3,
            **{f"{prefix}_{k}": v for k, v in metrics.items()}}
