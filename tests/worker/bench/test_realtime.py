"""The realtime benchmark's scheduling on its virtual clock (`worker.bench.realtime.play`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.worker.conftest import COARSE_GEOMETRY, COARSE_GRID
from worker.bench.quality import Setup, recording_for
from worker.bench.realtime import Scorer, play, summary
from worker.forward.model import ForwardModel
from worker.recon.base import create, normalise
from worker.recon.d2ip.cpu import library


@pytest.fixture(scope="module")
def frames(model_cache_dir: str) -> tuple[np.ndarray, np.ndarray]:
    """Twelve frames of the coarse healthy-deep-breath (its two, in turn), and their truths."""
    rec = recording_for("healthy-deep-breath",
                        Setup(frames=2, snr_db=50.0, geometry=COARSE_GEOMETRY,
                              grid=list(COARSE_GRID)))
    assert rec.truth is not None
    dv = normalise(rec.voltages, rec.reference)
    return np.resize(dv, (12, dv.shape[1])), np.resize(rec.truth, (12, *rec.truth.shape[1:]))


def test_every_frame_is_reconstructed_or_coalesced(
        coarse_model: ForwardModel, frames: tuple[np.ndarray, np.ndarray]) -> None:
    dvs, truth = frames
    scorer = Scorer(truth, coarse_model.mask)
    fast = np.arange(len(dvs)) * 1e-6  # a belt far faster than any method: a backlog
    played = play([create("tikhonov", coarse_model) for _ in range(2)], dvs, fast, scorer)
    for p in played:
        assert len(p.index) + p.coalesced == len(dvs) and p.index[-1] == len(dvs) - 1
        assert p.coalesced > 0 and min(p.latency) > 0
    report = summary(played, fast)
    assert {"latency_ms_p50", "latency_ms_p99", "mssim", "err", "cc", "frames"} <= set(report)
    assert report["frames"] + report["coalesced"] == 2 * len(dvs)


def test_background_steps_fill_the_time_between_frames(
        coarse_model: ForwardModel, frames: tuple[np.ndarray, np.ndarray]) -> None:
    dvs, truth = frames
    before, threads = library.set_threads(1), torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        live = create("d2ip-live", coarse_model, device="cpu", pretrain_steps=10,
                      pretrain_frames=4)
        slow = np.arange(len(dvs)) * 0.5  # two frames a second: time to spare
        played = play([live], dvs[:6], slow[:6], Scorer(truth[:6], coarse_model.mask))[0]
    finally:
        library.set_threads(before)
        torch.set_num_threads(threads)
    assert played.index == list(range(6)) and played.coalesced == 0
    assert played.background_steps == live.steps > 0
