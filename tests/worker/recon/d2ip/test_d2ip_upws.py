"""UPWS (eq. 6-7): the warm start is computed once per configuration, stored, and reused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from worker.forward.model import ForwardModel
from worker.recon.d2ip.method import D2IP, WARM_START_FOLDER, Iterations

FAST = {"device": "cpu", "iterations": Iterations(cold=12, warm=6, propagated=4)}


def test_warm_start_is_saved_once_and_reused(coarse_model: ForwardModel, frames3: np.ndarray,
                                             tmp_path: Path) -> None:
    first = D2IP(coarse_model, warm_start_dir=tmp_path, **FAST)
    a = first.push(frames3[0])
    path = first.warm_start_path
    assert path.parent == tmp_path and path.is_file()
    assert (first.upws_runs, first.warm_source) == (1, "computed")
    assert a.iterations == 12 + 6  # the UPWS run this frame caused, then the frame itself
    stamp = path.stat().st_mtime_ns

    second = D2IP(coarse_model, warm_start_dir=tmp_path, **FAST)
    b = second.push(frames3[0])
    assert (second.upws_runs, second.warm_source) == (0, "loaded")
    assert b.iterations == 6
    assert path.stat().st_mtime_ns == stamp  # not rewritten
    np.testing.assert_array_equal(b.volume, a.volume)  # same start, same frame, same result
    assert second.settings["warm_start"] == {"key": first.key, "source": "loaded"}


def test_a_later_session_uses_the_stored_warm_start_not_its_own_frame(
        coarse_model: ForwardModel, frames3: np.ndarray, tmp_path: Path) -> None:
    D2IP(coarse_model, warm_start_dir=tmp_path, **FAST).push(frames3[2])  # UPWS on frame 3
    reuse = D2IP(coarse_model, warm_start_dir=tmp_path, **FAST)
    own = D2IP(coarse_model, warm_start_dir=tmp_path / "empty", **FAST)
    assert not np.array_equal(reuse.push(frames3[0]).volume, own.push(frames3[0]).volume)


def test_key_covers_the_configuration(coarse_model: ForwardModel, tmp_path: Path) -> None:
    base = D2IP(coarse_model, warm_start_dir=tmp_path, **FAST)
    assert base.key == D2IP(coarse_model, warm_start_dir=tmp_path / "x", **FAST).key
    assert base.key == D2IP(coarse_model, tpp=False, warm_start_dir=tmp_path, **FAST).key
    for change in ({"seed": 1}, {"lam": 0.01}, {"out_range": 0.5}, {"lr": 1e-3},
                   {"whiten": False}, {"net": {"stem_width": 4}},
                   {"iterations": Iterations(cold=13, warm=6, propagated=4)}):
        opts = {**FAST, **change}
        assert D2IP(coarse_model, warm_start_dir=tmp_path, **opts).key != base.key, change


def test_default_store_is_under_the_cache_dir(coarse_model: ForwardModel, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EITMON_CACHE_DIR", str(tmp_path))
    recon = D2IP(coarse_model, **FAST)
    assert recon.warm_start_path == tmp_path / WARM_START_FOLDER / f"{recon.key}.pt"


def test_unreadable_warm_start_is_recomputed(coarse_model: ForwardModel, frames3: np.ndarray,
                                             tmp_path: Path) -> None:
    recon = D2IP(coarse_model, warm_start_dir=tmp_path, **FAST)
    recon.warm_start_path.write_bytes(b"not a checkpoint")
    recon.push(frames3[0])
    assert recon.upws_runs == 1
    assert D2IP(coarse_model, warm_start_dir=tmp_path, **FAST).read_warm_start() is not None
