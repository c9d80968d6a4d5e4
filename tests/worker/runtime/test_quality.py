"""Live data quality: a simulated broken electrode through the real API, a worker and valkey
is flagged on the session, shown to its viewers and excluded from its reconstruction."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from service.contract.codecs import SessionQuality
from service.contract.fields import ProgressField
from service.contract.keys import progress_key
from worker.metrics import cc, err
from worker.recon.base import create, get_method, normalise
from worker.simulation.faults import ElectrodeFault, apply_faults

if TYPE_CHECKING:
    from conftest import Bed, Running

N = 96
BROKEN = 3  # model electrode 4
EVERY = 16  # frames between two reports: the first one comes after frame 16


def belt_frames(bed: Bed, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(clean, broken) frames of a breathing lung with 0.1 % channel noise; the broken copy
    lost electrode 4's contact (the simulation's fault model) after the reference was taken."""
    clean = bed.frames(N, period=40).astype(np.float64)
    clean += 1e-3 * np.abs(clean.mean(axis=0)) * rng.standard_normal(clean.shape)
    broken, _ = apply_faults(clean, None, np.arange(N) / 20.0, bed.model.protocol,
                             [ElectrodeFault(BROKEN)], rng)
    return clean.astype(np.float32), broken.astype(np.float32)


def test_a_broken_electrode_is_flagged_shown_and_excluded(
        bed: Bed, in_process: Callable[..., Running]) -> None:
    clean, broken = belt_frames(bed, np.random.default_rng(7))
    sid = bed.create()  # complete policy, the clean model reference as explicit reference
    in_process({"tikhonov": get_method("tikhonov")}, quality_window=32, quality_every=EVERY)
    statuses: list[dict[str, Any]] = []
    with bed.viewer(sid) as ws:
        time.sleep(0.3)  # the API's reader is waiting on the results stream

        def status_seen() -> bool:
            with contextlib.suppress(TimeoutError):
                message = ws.recv(timeout=0.1)
                if isinstance(message, str) and json.loads(message)["type"] == "status":
                    statuses.append(json.loads(message))
            return bool(statuses)

        for k in range(0, N, 8):
            bed.post(sid, broken[k:k + 8], k)
        bed.wait(status_seen, "a status message with the quality")
    bed.wait(lambda: bed.settled(sid, N), "the counters")

    # the viewers' message: the shape the viewer renders
    status = statuses[0]
    assert status["status"] == "open" and status["quality"]["bad_electrodes"] == [BROKEN + 1]
    assert 0.5 < status["quality"]["usable_fraction"] < 0.95
    # the session shows it; every report flagged exactly that electrode
    quality = bed.info(sid)["quality"]
    assert quality["bad_electrodes"] == [BROKEN + 1] and quality["frames"] == 32
    assert "few usable channels" in quality["flags"][str(BROKEN + 1)]
    stored = SessionQuality.from_json(bed.redis.hget(progress_key(sid),
                                                     ProgressField.QUALITY.value))
    assert stored.seq == N - 1  # the last report covered the last frames

    # excluded: the volumes after the first report are close to the unbroken ones, those
    # before it (reconstructed through the broken electrode) are not
    reference = bed.model.reference_voltages.astype(np.float32).astype(np.float64)
    offline = create("tikhonov", bed.model)
    truth = {s: offline.push(normalise(clean[s], reference)).volume for s in range(N)}
    volumes = {r.seq: r.volume.astype(np.float64) for r in bed.results(sid, "volume")}
    assert set(volumes) == set(range(N))
    inside = bed.model.mask

    def score(seqs: range) -> tuple[float, float]:
        pairs = [(volumes[s][inside], truth[s][inside]) for s in seqs]
        return (float(np.mean([cc(v, t) for v, t in pairs])),
                float(np.mean([err(v, t) for v, t in pairs])))

    through, excluded = score(range(4, EVERY - 1)), score(range(2 * EVERY, N))
    assert excluded[0] >= 0.8 and excluded[1] <= 0.6, excluded
    assert excluded[0] > through[0] + 0.2 and excluded[1] < through[1] / 2, (through, excluded)


def test_a_clean_belt_flags_nothing(bed: Bed, in_process: Callable[..., Running]) -> None:
    clean, _ = belt_frames(bed, np.random.default_rng(8))
    sid = bed.create()
    in_process({"tikhonov": get_method("tikhonov")}, quality_window=32, quality_every=EVERY)
    bed.post(sid, clean[:48], 0)
    bed.wait(lambda: bed.settled(sid, 48), "the counters")
    bed.wait(lambda: (bed.info(sid)["quality"] or {}).get("seq") == 47, "the last report")
    quality = bed.info(sid)["quality"]
    assert quality["bad_electrodes"] == [] and quality["usable_fraction"] == 1.0


def test_a_drifting_electrode_is_flagged_on_the_session(
        bed: Bed, in_process: Callable[..., Running]) -> None:
    """Electrode 7's contact gain ramps 5 % over 10 s (the fault bench's `drift`): the live
    drift check, over the frames' timestamps, flags it on the session (the exclusion that
    follows every flag is the broken electrode's test above)."""
    n = 200  # 10 s at 20 frames/s
    rng = np.random.default_rng(9)
    clean = bed.frames(n, period=80).astype(np.float64)
    clean += 1e-3 * np.abs(clean.mean(axis=0)) * rng.standard_normal(clean.shape)
    drift, _ = apply_faults(clean, None, np.arange(n) / 20.0, bed.model.protocol,
                            [ElectrodeFault(6, "drift")], rng)
    sid = bed.create()
    in_process({"tikhonov": get_method("tikhonov")}, quality_window=32, quality_every=EVERY)
    for k in range(0, n, 20):
        bed.post(sid, drift[k:k + 20].astype(np.float32), k)
    bed.wait(lambda: bed.settled(sid, n), "the counters")
    bed.wait(lambda: (bed.info(sid)["quality"] or {}).get("seq") == n - 9, "the last report")
    quality = bed.info(sid)["quality"]
    assert quality["bad_electrodes"] == [7] and quality["flags"] == {"7": ["drift"]}
