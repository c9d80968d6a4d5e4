"""UPWS (eq. 6-7): the warm start is computed once per configuration, stored, and reused."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from worker.forward.model import ForwardModel
from worker.recon.base import create
from worker.recon.d2ip.config import Iterations
from worker.recon.d2ip.network import NetConfig
from worker.recon.d2ip.reconstructor import D2IP
from worker.recon.d2ip.warm_start import WARM_START_FOLDER

FAST = {"device": "cpu", "iterations": Iterations(cold=12, warm=6, propagated=4)}


def make(model: ForwardModel, name: str = "d2ip", **options) -> D2IP:
    recon = create(name, model, **{**FAST, **options})
    assert isinstance(recon, D2IP)
    return recon


def test_warm_start_is_saved_once_and_reused(coarse_model: ForwardModel, frames3: np.ndarray,
                                             tmp_path: Path) -> None:
    first = make(coarse_model, warm_start_dir=tmp_path)
    a = first.push(frames3[0])
    path = first.store.path
    assert path.parent == tmp_path and path.is_file()
    assert (first.upws_runs, first.warm_source) == (1, "computed")
    assert a.iterations == 12 + 6  # the UPWS run this frame caused, then the frame itself
    stamp = path.stat().st_mtime_ns

    second = make(coarse_model, warm_start_dir=tmp_path)
    b = second.push(frames3[0])
    assert (second.upws_runs, second.warm_source) == (0, "loaded")
    assert b.iterations == 6
    assert path.stat().st_mtime_ns == stamp  # not rewritten
    np.testing.assert_array_equal(b.volume, a.volume)  # same start, same frame, same result
    assert second.settings["warm_start"] == {"key": first.key, "source": "loaded"}


def test_a_later_session_uses_the_stored_warm_start_not_its_own_frame(
        coarse_model: ForwardModel, frames3: np.ndarray, tmp_path: Path) -> None:
    make(coarse_model, warm_start_dir=tmp_path).push(frames3[2])  # UPWS on frame 3
    reuse = make(coarse_model, warm_start_dir=tmp_path)
    own = make(coarse_model, warm_start_dir=tmp_path / "empty")
    assert not np.array_equal(reuse.push(frames3[0]).volume, own.push(frames3[0]).volume)


def test_key_covers_the_configuration(coarse_model: ForwardModel, tmp_path: Path) -> None:
    base = make(coarse_model, warm_start_dir=tmp_path)
    assert base.key == make(coarse_model, warm_start_dir=tmp_path / "x").key
    assert base.key == make(coarse_model, "d2ip-no-tpp", warm_start_dir=tmp_path).key
    for change in ({"seed": 1}, {"lam": 0.01}, {"out_range": 0.5}, {"lr": 1e-3},
                   {"whiten": False}, {"net": {"stem_width": 4}},
                   {"iterations": Iterations(cold=13, warm=6, propagated=4)}):
        assert make(coarse_model, warm_start_dir=tmp_path, **change).key != base.key, change


def test_key_keeps_the_stored_format(coarse_model: ForwardModel, tmp_path: Path) -> None:
    # warm starts already on disk stay valid: the key hashes exactly these fields
    text = json.dumps({"format": 1, "model": coarse_model.spec, "net": asdict(NetConfig()),
                       "seed": 0, "loss": {"lam": 0.002, "lam_s": 1.0, "lam_t": 0.1,
                                           "eps": 1e-6, "window": 10},
                       "out_range": [-0.75, 0.75], "whiten": True, "lr": 5e-4,
                       "iterations": 12}, sort_keys=True)
    assert make(coarse_model, warm_start_dir=tmp_path).key == \
        hashlib.sha256(text.encode()).hexdigest()[:20]


def test_warm_start_write_is_durable(coarse_model: ForwardModel, tmp_path: Path,
                                     fsynced: list[str]) -> None:
    """The store writes through `storage.write_atomic`: file and folder fsynced, no temporary
    file left, and the snapshot reads back."""
    recon = make(coarse_model, warm_start_dir=tmp_path)
    snapshot = recon.snapshot()
    fsynced.clear()  # building the reconstructor may have cached the model's spectrum
    recon.store.write(snapshot, {"iterations": 0})
    assert fsynced == ["file", "folder"]
    assert [path.name for path in tmp_path.iterdir()] == [recon.store.path.name]
    stored = recon.store.read()
    assert stored is not None and stored.weights.keys() == snapshot.weights.keys()


def test_default_store_is_under_the_cache_dir(coarse_model: ForwardModel, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EITMON_CACHE_DIR", str(tmp_path))
    recon = make(coarse_model)
    assert recon.store.path == tmp_path / WARM_START_FOLDER / f"{recon.key}.pt"


def test_unreadable_warm_start_is_recomputed(coarse_model: ForwardModel, frames3: np.ndarray,
                                             tmp_path: Path) -> None:
    recon = make(coarse_model, warm_start_dir=tmp_path)
    recon.store.path.write_bytes(b"not a checkpoint")
    recon.push(frames3[0])
    assert recon.upws_runs == 1
    assert make(coarse_model, warm_start_dir=tmp_path).store.read() is not None
