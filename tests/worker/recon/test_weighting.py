"""Data weights per recording: a broken electrode excluded, noise weights from the data, on a
simulation and on a real slice. The image with the exclusion must stay close to the unbroken
one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from worker.bench.quality import Setup, recording_for
from worker.devices.goettingen import read_get
from worker.forward import load_model
from worker.forward.model import ForwardModel
from worker.metrics import cc, err
from worker.recon.base import create, reconstruct_recording
from worker.recon.weighting import DataWeighting, parse_electrodes, weighted_model, weights_for
from worker.recording import Recording
from worker.simulation.faults import ElectrodeFault, apply_faults

RING = {"preset": "thorax-1x16", "mesh_size": 0.016}
RING_SETUP = Setup(frames=8, snr_db=50.0, geometry=RING, protocol="adjacent", grid=[8, 16, 16])
BROKEN = 3
NEONATE = Path(__file__).resolve().parents[2] / "data" / "realdata" / "P04P-1016-first40.get"


@pytest.fixture(scope="module")
def ring_model(model_cache_dir: str) -> ForwardModel:
    return load_model(RING, "adjacent", [8, 16, 16])


@pytest.fixture(scope="module")
def breath(model_cache_dir: str) -> Recording:
    return recording_for("healthy-deep-breath", RING_SETUP)


@pytest.fixture(scope="module")
def broken(breath: Recording, ring_model: ForwardModel) -> Recording:
    voltages, reference = apply_faults(breath.voltages, breath.reference, breath.frame_times,
                                       ring_model.protocol, [ElectrodeFault(BROKEN)],
                                       np.random.default_rng(1))
    return Recording(voltages=voltages, reference=reference, frame_times=breath.frame_times,
                     mask=breath.mask, meta=breath.meta, truth=breath.truth)


def last_image(model: ForwardModel, method: str, rec: Recording) -> np.ndarray:
    volumes, _ = reconstruct_recording(create(method, model), rec.voltages, rec.reference)
    return volumes[-1][model.mask]


@pytest.mark.parametrize("method", ["tikhonov", "greit", "tv"])
def test_excluding_a_broken_electrode_keeps_the_unbroken_image(
        method: str, ring_model: ForwardModel, breath: Recording, broken: Recording) -> None:
    unbroken = last_image(ring_model, method, breath)
    through = last_image(ring_model, method, broken)
    excluded = last_image(weighted_model(ring_model, DataWeighting(exclude=(BROKEN,))), method,
                          broken)
    assert cc(excluded, unbroken) >= 0.7
    assert err(excluded, unbroken) <= 0.75
    assert cc(excluded, unbroken) > cc(through, unbroken)
    assert err(excluded, unbroken) < err(through, unbroken)


def test_excluded_channels_have_zero_weight_and_their_own_cache(
        ring_model: ForwardModel) -> None:
    variant = weighted_model(ring_model, DataWeighting(exclude=(BROKEN,)))
    protocol = ring_model.protocol
    uses = ((protocol.meas_weights[:, BROKEN] != 0)
            | (protocol.currents[protocol.meas_injection, BROKEN] != 0))
    assert np.array_equal(variant.operator.weights == 0, uses)
    np.testing.assert_array_equal(variant.operator.weights[~uses],
                                  ring_model.operator.weights[~uses])
    assert variant.operator.variant is not None and ring_model.operator.variant is None
    assert weighted_model(ring_model, DataWeighting()) is ring_model
    tik = create("tikhonov", variant)
    assert np.all(tik.operator.matrix[:, uses] == 0)  # no excluded channel reaches the image
    assert np.all(tik.operator.factors.right[:, uses] == 0)


def test_noise_weights_follow_the_measured_noise(ring_model: ForwardModel,
                                                 breath: Recording) -> None:
    rng = np.random.default_rng(0)
    frames = np.repeat(breath.reference[None], 40, axis=0)
    noise = np.full(ring_model.n_measurements, 1e-6)
    noise[:10] = 1e-5  # ten channels ten times noisier
    frames = frames + rng.normal(size=frames.shape) * noise
    weights = weights_for(ring_model, DataWeighting(noise="data"), frames, breath.reference)
    assert np.sqrt(np.mean(weights**2)) == pytest.approx(1.0)
    ratio = (weights[:10] / np.abs(breath.reference[:10])).mean() / (
        weights[10:] / np.abs(breath.reference[10:])).mean()
    assert ratio == pytest.approx(0.1, rel=0.35)
    with pytest.raises(ValueError, match="three frames"):
        weights_for(ring_model, DataWeighting(noise="data"), frames[:2], breath.reference)


def test_parse_electrodes() -> None:
    assert parse_electrodes("3, 7,3", 16) == (2, 6)
    assert parse_electrodes("", 16) == ()
    with pytest.raises(ValueError, match="1 to 16"):
        parse_electrodes("17", 16)


def test_masking_an_electrode_on_a_real_slice_keeps_the_image(model_cache_dir: str) -> None:
    """The neonate's 40-frame slice (tests/data/realdata; attribution in its README)."""
    device = read_get(NEONATE)
    coarse_ring_model = load_model(RING, device.protocol, [8, 16, 16])
    voltages = device.voltages
    reference = voltages.mean(axis=0)
    curve = (voltages / reference).mean(axis=1)
    frames = voltages[[int(np.argmin(curve)), int(np.argmax(curve))]]
    for method in ("tikhonov", "greit"):
        full, _ = reconstruct_recording(create(method, coarse_ring_model), frames, reference)
        variant = weighted_model(coarse_ring_model, DataWeighting(exclude=(3,)))
        masked, _ = reconstruct_recording(create(method, variant), frames, reference)
        inside = coarse_ring_model.mask
        full_tidal, masked_tidal = (v[1][inside] - v[0][inside] for v in (full, masked))
        assert cc(masked_tidal, full_tidal) >= 0.8, method
        assert err(masked_tidal, full_tidal) <= 0.6, method
