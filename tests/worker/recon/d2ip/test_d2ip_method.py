"""The D2IP streaming reconstructor: registry, TPP, variants, schedules, state, quality."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from worker.forward.model import ForwardModel
from worker.recon.base import available_methods, create
from worker.recon.d2ip.config import Iterations
from worker.recon.d2ip.reconstructor import D2IP
from worker.recon.d2ip.warm_start import Snapshot
from worker.runtime import state_codec

ITERS = Iterations(cold=12, warm=6, propagated=4)


def make(model: ForwardModel, tmp_path: Path, name: str = "d2ip", **options) -> D2IP:
    recon = create(name, model, device="cpu",
                   **{"iterations": ITERS, "warm_start_dir": tmp_path, **options})
    assert isinstance(recon, D2IP)
    return recon


def loss_at(recon: D2IP, start: Snapshot, dv: np.ndarray) -> float:
    """Eq. (14) of frame `dv` (with the current window) at the weights of `start`."""
    current = recon.snapshot()
    recon.load_snapshot(start)
    with torch.no_grad():
        value = float(recon.objective(recon.measurements(dv), recon.window).total)
    recon.load_snapshot(current)
    return value


def test_variants_are_registered(coarse_model: ForwardModel, tmp_path: Path) -> None:
    assert {"d2ip", "d2ip-no-upws", "d2ip-no-tpp", "dip",
            "d2ip-scaled"} <= set(available_methods())
    expect = {"d2ip": (True, True, 0.002, "fixed"), "d2ip-no-upws": (False, True, 0.002, "fixed"),
              "d2ip-no-tpp": (True, False, 0.002, "fixed"), "dip": (False, False, 0.0, "fixed"),
              "d2ip-scaled": (True, True, 0.002, "data")}
    for name, (upws, tpp, lam, rule) in expect.items():
        s = make(coarse_model, tmp_path, name).settings
        assert ((s["variant"], s["upws"], s["tpp"], s["loss"]["lam"], s["lam_rule"])
                == (name, upws, tpp, lam, rule))
        json.dumps(s)
    assert make(coarse_model, tmp_path, "dip", lam=0.01).settings["loss"]["lam"] == 0.01
    with pytest.raises(TypeError, match="upws"):
        make(coarse_model, tmp_path, "dip", upws=True)
    assert make(coarse_model, tmp_path, data="real").lr == 5e-4
    assert make(coarse_model, tmp_path, data="real", lr=1e-4).lr == 1e-4
    assert make(coarse_model, tmp_path).lr == 5e-4


def test_output_range_by_data(coarse_model: ForwardModel, healthy_dv: np.ndarray,
                              tmp_path: Path) -> None:
    """Simulated data keep the tuned [-0.75, 0.75]; real data take the range from each frame
    (a frame twice as strong gets twice the range), and the key tells them apart."""
    assert make(coarse_model, tmp_path).settings["out_range"] == [-0.75, 0.75]
    real = make(coarse_model, tmp_path, data="real")
    assert real.settings["out_range"]["rule"] == "data"
    assert real.key != make(coarse_model, tmp_path, data="real", lr=5e-4, out_range=0.75).key
    dv = healthy_dv[-1]
    real.fit(dv)
    first = real.objective.out_range.hi
    real.fit(2.0 * dv)
    assert real.objective.out_range.hi == pytest.approx(2.0 * first, rel=1e-5)
    assert make(coarse_model, tmp_path, out_range="data", range_margin=3.0).settings[
        "out_range"]["margin"] == 3.0


def test_rejects_bad_options(coarse_model: ForwardModel, tmp_path: Path) -> None:
    for bad in ({"schedule": "fast"}, {"data": "clinical"}, {"out_range": -1.0},
                {"iterations": (0, 1, 1)}, {"iterations": (1, 1)}, {"lam_rule": "auto"},
                {"schedule": "adaptive", "adaptive_tol": 0.0}, {"lam": -1.0}, {"kappa": 0.0,
                                                                              "lam_rule": "data"}):
        with pytest.raises(ValueError):
            make(coarse_model, tmp_path, **bad)
    with pytest.raises(TypeError, match="moments"):
        make(coarse_model, tmp_path, moments="reset")


@pytest.mark.parametrize("name, counts", [
    ("d2ip", [ITERS.cold + ITERS.warm, ITERS.propagated, ITERS.propagated]),
    ("d2ip-no-upws", [ITERS.cold, ITERS.propagated, ITERS.propagated]),
    ("d2ip-no-tpp", [ITERS.cold + ITERS.warm, ITERS.warm, ITERS.warm]),
    ("dip", [ITERS.cold] * 3),
])
def test_iterations_follow_the_start_of_each_frame(coarse_model: ForwardModel,
                                                   frames3: np.ndarray, tmp_path: Path,
                                                   name: str, counts: list[int]) -> None:
    recon = make(coarse_model, tmp_path, name)
    assert [r.iterations for r in recon.push_many(frames3)] == counts
    assert recon.upws_runs == int(recon.config.upws)
    assert any(tmp_path.iterdir()) == recon.config.upws


def test_tpp_frame_two_starts_where_frame_one_ended(coarse_model: ForwardModel,
                                                    frames3: np.ndarray, tmp_path: Path) -> None:
    recon = make(coarse_model, tmp_path)
    recon.push(frames3[0])
    end_of_one = recon.snapshot()
    expected = loss_at(recon, end_of_one, frames3[1])
    recon.push(frames3[1])
    assert recon.last.loss_history[0] == expected
    steps = {float(m["step"]) for m in recon.snapshot().moments.values()}
    assert steps == {ITERS.cold + ITERS.warm + ITERS.propagated}  # Adam moments carried too


def test_no_tpp_restarts_from_the_warm_start(coarse_model: ForwardModel, frames3: np.ndarray,
                                             tmp_path: Path) -> None:
    recon = make(coarse_model, tmp_path, "d2ip-no-tpp")
    recon.push(frames3[0])
    assert recon.warm is not None
    expected = loss_at(recon, recon.warm, frames3[1])
    assert expected != loss_at(recon, recon.snapshot(), frames3[1])
    recon.push(frames3[1])
    assert recon.last.loss_history[0] == expected
    steps = {float(m["step"]) for m in recon.snapshot().moments.values()}
    assert steps == {ITERS.cold + ITERS.warm}


def test_dip_restarts_every_frame_from_the_kaiming_init(coarse_model: ForwardModel,
                                                        frames3: np.ndarray,
                                                        tmp_path: Path) -> None:
    recon = make(coarse_model, tmp_path, "dip")
    fresh = make(coarse_model, tmp_path, "dip")
    recon.push_many(frames3[:2])
    assert recon.last.loss_history[0] == loss_at(fresh, fresh.kaiming, frames3[1])
    assert recon.last.loss == recon.last.data_loss  # no handcrafted prior


def test_adaptive_schedule_reports_iterations_within_bounds(coarse_model: ForwardModel,
                                                            frames3: np.ndarray,
                                                            tmp_path: Path) -> None:
    counts = Iterations(cold=12, warm=90, propagated=70)
    recon = create("d2ip", coarse_model, device="cpu", schedule="adaptive", iterations=counts,
                   min_iterations=45, warm_start_dir=tmp_path)
    results = recon.push_many(frames3)
    assert 45 <= results[0].iterations - counts.cold <= counts.warm
    for r in results[1:]:
        assert 45 <= r.iterations <= counts.propagated
    assert recon.last.iterations == results[-1].iterations
    loose = create("d2ip", coarse_model, device="cpu", schedule="adaptive", adaptive_tol=0.5,
                   warm_start_dir=tmp_path)
    assert loose.stop_rule("propagated").tol == 0.5 and loose.settings["adaptive_tol"] == 0.5


def test_state_fits_the_checkpoint_codec_and_continues(coarse_model: ForwardModel,
                                                       frames3: np.ndarray, tmp_path: Path,
                                                       continues) -> None:
    for name in ("d2ip", "d2ip-no-tpp"):
        def build(name: str = name) -> D2IP:
            return make(coarse_model, tmp_path, name)

        continues(build, frames3, atol=0.0)
    recon = make(coarse_model, tmp_path)
    recon.push(frames3[0])
    tree, arrays = state_codec.encode(recon.state_dict())
    json.dumps(tree)
    other = make(coarse_model, tmp_path)
    other.load_state_dict(state_codec.decode(tree, arrays))
    np.testing.assert_array_equal(other.push(frames3[1]).volume, recon.push(frames3[1]).volume)
    with pytest.raises(ValueError, match="configuration"):
        make(coarse_model, tmp_path, lam=0.01).load_state_dict(recon.state_dict())


RESTORE = """
import json, sys
import numpy as np, torch
torch.set_num_threads(1)
from worker.forward import load_model
from worker.recon.base import create
from worker.recon.d2ip.config import Iterations
from worker.runtime import state_codec
args = json.loads(sys.argv[1])
model = load_model(**args["spec"], cache_dir=args["cache"])
recon = create("d2ip", model, device="cpu", iterations=Iterations(*args["iterations"]),
               warm_start_dir=args["warm"])
with np.load(args["state"], allow_pickle=False) as z:
    tree = json.loads(str(z["__tree__"]))
    state = state_codec.decode(tree, {k: z[k] for k in z.files if k != "__tree__"})
recon.load_state_dict(state)
frames = np.load(args["frames"])
np.save(args["out"], np.stack([recon.push(f).volume for f in frames]))
"""


def test_restore_in_another_process_continues_exactly(coarse_model: ForwardModel,
                                                      frames3: np.ndarray, tmp_path: Path,
                                                      recon_cache: Path) -> None:
    recon = make(coarse_model, tmp_path)
    recon.push(frames3[0])
    tree, arrays = state_codec.encode(recon.state_dict())
    np.savez(tmp_path / "state.npz", __tree__=np.array(json.dumps(tree)), **arrays)
    np.save(tmp_path / "frames.npy", frames3[1:])
    uninterrupted = np.stack([recon.push(f).volume for f in frames3[1:]])
    (tmp_path / "warm").mkdir()  # no warm start there: the restored state must not need it
    args = {"spec": coarse_model.spec, "cache": str(recon_cache),
            "iterations": [ITERS.cold, ITERS.warm, ITERS.propagated],
            "warm": str(tmp_path / "warm"), "state": str(tmp_path / "state.npz"),
            "frames": str(tmp_path / "frames.npy"), "out": str(tmp_path / "out.npy")}
    root = Path(__file__).resolve().parents[4]
    subprocess.run([sys.executable, "-c", textwrap.dedent(RESTORE), json.dumps(args)],
                   check=True, cwd=root, timeout=300)
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), uninterrupted, rtol=0, atol=1e-6)
    assert not any((tmp_path / "warm").iterdir())


def test_quality_on_healthy_deep_breath(coarse_model: ForwardModel, healthy, cc_of,
                                        tmp_path: Path) -> None:
    # Coarse model, two frames (start and end of the inhalation, 50 dB), about a tenth of the
    # paper's iterations at 4x its learning rate. Measured: CC 0.80 (0.83 with the paper's
    # schedule and learning rate; Tikhonov 0.83 on the same frames). 0.7 is the bar of the
    # baselines' tests; a wrong sign, a saturated output or an unfitted network gives CC near 0
    # or below.
    recon = create("d2ip", coarse_model, device="cpu", iterations=(200, 40, 100), lr=2e-3,
                   warm_start_dir=tmp_path)
    assert cc_of(recon, healthy) > 0.7
