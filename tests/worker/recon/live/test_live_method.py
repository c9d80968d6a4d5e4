"""`d2ip-live`: registered and accepted, its start, its fine-tuning and its state."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from service.contract.session import METHODS
from worker.bench.quality import model_of
from worker.forward.model import ForwardModel
from worker.recon.base import available_methods, create, normalise
from worker.recon.d2ip.cpu import execution_for, library
from worker.recon.d2ip.mapping import OutputRange
from worker.recon.d2ip.network import FastResUNet3D
from worker.recon.live.config import LiveConfig
from worker.recon.live.frames import training_frames
from worker.recon.live.reconstructor import D2IPLive
from worker.recon.live.start import network_input, supervised_fit
from worker.recon.tikhonov import Tikhonov
from worker.recording import Recording
from worker.runtime.state_codec import decode, encode

FAST = {"pretrain_steps": 10, "pretrain_frames": 4}


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One kernel and torch thread: these tests measure no speed, and two threads spin
    against each other on a loaded 2-core machine."""
    threads = torch.get_num_threads()
    before = library.set_threads(1)
    torch.set_num_threads(1)
    yield
    library.set_threads(before)
    torch.set_num_threads(threads)


def make(model: ForwardModel, **options: object) -> D2IPLive:
    recon = create("d2ip-live", model, device="cpu", **{**FAST, **options})
    assert isinstance(recon, D2IPLive)
    return recon


def test_registered_and_accepted_by_the_api() -> None:
    assert "d2ip-live" in available_methods()
    assert "d2ip-live" in METHODS


def test_rejects_bad_options(coarse_model: ForwardModel) -> None:
    with pytest.raises(ValueError):
        make(coarse_model, window=1)
    with pytest.raises(TypeError):
        make(coarse_model, schedule="adaptive")


def test_supervised_start_learns_preview_to_truth(coarse_model: ForwardModel) -> None:
    """On frames it never saw, the fitted network is closer to the truth than before."""
    execution, out_range = execution_for(torch.device("cpu")), OutputRange.symmetric(0.75)
    preview = Tikhonov(coarse_model).images
    mask = torch.as_tensor(coarse_model.mask)
    held_out = training_frames(coarse_model, 8, seed=99)
    net = FastResUNet3D(seed=0)
    net.tail.weight.data.normal_(0, 0.1, generator=torch.Generator().manual_seed(0))

    def error(scale: float) -> float:
        with torch.no_grad():
            z = network_input(preview(torch.from_numpy(held_out.dv)), mask, scale)
            values = torch.stack([out_range.apply(execution.phi(net, z[k:k + 1])())[mask]
                                  for k in range(len(z))])
        return float(torch.mean((values - torch.from_numpy(held_out.truth)) ** 2))

    before = error(1.0)
    scale = supervised_fit(net, coarse_model, LiveConfig(pretrain_steps=80,
                                                         pretrain_frames=16),
                           preview, execution, out_range)
    after = error(scale)
    zero = float(torch.mean(torch.from_numpy(held_out.truth) ** 2))  # "no change" everywhere
    assert after < 0.7 * before and after < 0.7 * zero


def test_frames_are_one_forward_pass_and_fine_tuning_fits_the_data(
        coarse_model: ForwardModel, healthy_dv: np.ndarray) -> None:
    """The network's own fit, so without the amplitude fit: with it, the frame's data term
    starts near where 60-120 steps bring it (0.012 against 0.011 on a fresh start), and the
    first steps may raise it for a while (the fit is tested on its own below)."""
    recon = make(coarse_model, amplitude_fit=False, log_conductivity=False)
    assert not recon.background_step()  # nothing to fit before two frames
    first = recon.push(healthy_dv[0])
    assert first.iterations == 1 and np.isfinite(first.volume).all()
    again = recon.push(healthy_dv[1])
    np.testing.assert_array_equal(recon.push(healthy_dv[1]).volume, again.volume)
    for _ in range(60):
        assert recon.background_step()
    assert recon.steps == 60
    after = recon.push(healthy_dv[1])
    assert after.loss < 0.7 * again.loss  # eq. (14)'s data term on this frame fell


def test_frame_is_the_data_fitted_amplitude_read_as_log_conductivity(
        coarse_model: ForwardModel, healthy_dv: np.ndarray) -> None:
    """With the same weights (the flags do not change the start): the served volume is
    exp(alpha x) - 1 of the plain network values x, alpha is their least-squares amplitude
    against the frame's data, and the data term at alpha x is no larger than at x."""
    plain = make(coarse_model, amplitude_fit=False, log_conductivity=False)
    fitted = make(coarse_model, log_conductivity=False)
    served = make(coarse_model)
    x, y, z = (r.push(healthy_dv[1]) for r in (plain, fitted, served))
    mask = coarse_model.mask
    alpha = served.alpha
    assert alpha > 0 and fitted.alpha == pytest.approx(alpha)
    np.testing.assert_allclose(y.volume[mask], alpha * x.volume[mask], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(z.volume[mask], np.expm1(y.volume[mask]), rtol=1e-5, atol=1e-7)
    assert y.loss <= x.loss and z.loss == pytest.approx(y.loss)
    for other in (0.9 * alpha, 1.1 * alpha):  # alpha is the minimum of the data term
        values = torch.from_numpy(other * x.volume[mask])
        data = torch.from_numpy(healthy_dv[1].astype(np.float32)) * plain.data_weights
        assert float(plain.objective.data(values, data)) > y.loss


def test_the_linearisation_holds_in_log_conductivity(healthy: Recording) -> None:
    """Why the network's values are read as ln(σ/σ0): on the FEM data of the deep breath
    (empty-thorax reference, lungs down to -56 %), J ln(1 + δ) predicts the data far better
    than J δ, with its least-squares amplitude near 1 (J δ needs about 1.5)."""
    model = model_of(healthy)
    truth = healthy.truth[-1][model.mask].astype(float)
    data = model.operator.weights * normalise(healthy.voltages, healthy.reference)[-1]

    def fit(x: np.ndarray) -> tuple[float, float]:
        ax = model.operator.whitened @ x
        return float(ax @ data / (ax @ ax)), float(np.linalg.norm(data - ax)
                                                   / np.linalg.norm(data))

    (scale_lin, misfit_lin), (scale_log, misfit_log) = fit(truth), fit(np.log1p(truth))
    assert truth.min() < -0.4
    assert misfit_log < 0.5 * misfit_lin
    assert 0.85 < scale_log < 1.2 < 1.3 < scale_lin


def test_tidal_difference_is_inspiration_minus_expiration(
        coarse_model: ForwardModel, healthy_dv: np.ndarray) -> None:
    """healthy-deep-breath inhales from frame 0 to frame 1: the global impedance rises."""
    recon = make(coarse_model)
    recon.push(healthy_dv[0])
    recon.push(healthy_dv[1])
    np.testing.assert_allclose(recon.tidal_difference(), healthy_dv[1] - healthy_dv[0],
                               rtol=1e-6, atol=1e-7)
    exhaling = make(coarse_model)
    exhaling.push(healthy_dv[1])
    exhaling.push(healthy_dv[0])
    assert exhaling.tidal_difference() is None


def test_state_fits_the_checkpoint_codec_and_continues(
        coarse_model: ForwardModel, frames3: np.ndarray,
        continues: Callable[..., None]) -> None:
    continues(lambda: make(coarse_model), frames3)
    a = make(coarse_model, tidal_every=2)
    for frame in frames3:
        a.push(frame)
        a.background_step()
    tree, arrays = encode(a.state_dict())
    b = make(coarse_model, tidal_every=2)
    b.load_state_dict(decode(tree, arrays))
    for recon in (a, b):  # the same fine-tuning steps (tidal ones included), the same volume
        for _ in range(4):
            recon.background_step()
    np.testing.assert_array_equal(a.push(frames3[1]).volume, b.push(frames3[1]).volume)
    assert a.steps == b.steps == 6  # no step after the first frame alone


def test_start_is_cached(coarse_model: ForwardModel, model_cache_dir: str) -> None:
    make(coarse_model, seed=3)
    files = list((Path(model_cache_dir) / "d2ip-live").glob("start-*.npz"))
    assert files
    stamp = {f: f.stat().st_mtime_ns for f in files}
    make(coarse_model, seed=3)
    assert {f: f.stat().st_mtime_ns for f in files} == stamp
