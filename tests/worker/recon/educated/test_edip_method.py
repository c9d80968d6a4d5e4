"""`edip`: registered and accepted by the API, educated start instead of UPWS, the preview as
input frame by frame, TPP, checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from service.contract.session import METHODS
from worker.forward.model import ForwardModel
from worker.recon.base import available_methods, create
from worker.recon.educated.reconstructor import EducatedDIP
from worker.recon.educated.train import network_input
from worker.recon.educated.weights import educated_state
from worker.runtime import state_codec

# the tiny pretraining (conftest.TINY) through the method's options
TINY_OPTIONS = {"pretrain_steps": 4, "pretrain_samples": 6, "pretrain_fem_samples": 0}
ITERS = (12, 6, 4)


def make(model: ForwardModel, tmp_path: Path, **options: Any) -> EducatedDIP:
    recon = create("edip", model, device="cpu", warm_start_dir=tmp_path,
                   **{"iterations": ITERS, **TINY_OPTIONS, **options})
    assert isinstance(recon, EducatedDIP)
    return recon


def test_registered_and_accepted_by_the_api() -> None:
    assert "edip" in available_methods()
    assert "edip" in METHODS


def test_rejects_what_the_method_fixes(coarse_model: ForwardModel, tmp_path: Path) -> None:
    for fixed in ({"upws": False}, {"net": {"stem_width": 16}}):
        with pytest.raises(TypeError, match="fixed"):
            make(coarse_model, tmp_path, **fixed)


def test_starts_from_the_educated_weights_and_feeds_each_preview(
        coarse_model: ForwardModel, frames3: np.ndarray, tmp_path: Path) -> None:
    recon = make(coarse_model, tmp_path)
    counts = [recon.push(f).iterations for f in frames3]
    assert counts == [ITERS[1], ITERS[2], ITERS[2]]  # no UPWS: 6 on the first frame, then TPP
    assert recon.upws_runs == 0 and not list(tmp_path.glob("*.pt"))
    expected = network_input(recon.preview(frames3[-1]), recon.mask)
    torch.testing.assert_close(recon.objective.z, expected)  # the last frame's preview
    fresh = make(coarse_model, tmp_path)
    fresh.restart(frames3[0])
    educated = educated_state(coarse_model, fresh.pretraining)
    for name, p in fresh.net.named_parameters():
        torch.testing.assert_close(p.detach(), educated[name])
    assert recon.settings["educated"]["key"] == fresh.settings["educated"]["key"]


def test_without_tpp_every_frame_starts_from_the_educated_weights(
        coarse_model: ForwardModel, frames3: np.ndarray, tmp_path: Path) -> None:
    recon = make(coarse_model, tmp_path, tpp=False)
    counts = [recon.push(f).iterations for f in frames3]
    assert counts == [ITERS[1]] * 3  # every frame the educated start's count, no TPP
    # the same frame once more, after two others: the same start, the same image, but for the
    # 4D-TV window the frames before it leave (compare against a fresh object, window empty)
    again = make(coarse_model, tmp_path, tpp=False).push(frames3[-1]).volume
    with_tpp = make(coarse_model, tmp_path)
    for f in frames3:
        carried = with_tpp.push(f).volume
    fresh_error = float(np.abs(recon.push(frames3[-1]).volume - again).max())
    carried_error = float(np.abs(carried - again).max())
    assert fresh_error < carried_error  # restarting stays nearer the fresh start than TPP


def test_tidal_options_restart_every_breath(coarse_model: ForwardModel,
                                            tmp_path: Path) -> None:
    from worker.recon.base import tidal_options
    from worker.recon.educated.method import TIDAL_ITERATIONS

    options = tidal_options("edip")
    assert options["tpp"] is False and options["iterations"][1:] == (TIDAL_ITERATIONS,) * 2
    assert tidal_options("d2ip")["schedule"] == "adaptive" and tidal_options("tikhonov") == {}


def test_pretrained_network_alone_is_one_forward_pass(coarse_model: ForwardModel,
                                                      frames3: np.ndarray,
                                                      tmp_path: Path) -> None:
    recon = make(coarse_model, tmp_path)
    a, b = (recon.pretrained(f) for f in frames3[:2])
    assert a.shape == (coarse_model.n_voxels,) and not torch.equal(a, b)
    assert recon.optimizer.moments() == {}  # no step was taken


def test_continues_from_a_checkpoint(coarse_model: ForwardModel, frames3: np.ndarray,
                                     tmp_path: Path) -> None:
    a = make(coarse_model, tmp_path)
    a.push(frames3[0])
    tree, arrays = state_codec.encode(a.state_dict())
    rest_a = [a.push(f).volume for f in frames3[1:]]
    b = make(coarse_model, tmp_path)
    b.load_state_dict(state_codec.decode(tree, arrays))
    rest_b = [b.push(f).volume for f in frames3[1:]]
    for va, vb in zip(rest_a, rest_b, strict=True):
        np.testing.assert_allclose(vb, va, rtol=0, atol=1e-6)
    d2ip_state = create("d2ip", coarse_model, device="cpu", warm_start_dir=tmp_path,
                        iterations=ITERS).state_dict()
    with pytest.raises(ValueError, match="configuration"):
        b.load_state_dict(d2ip_state)
