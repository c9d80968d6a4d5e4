"""The child's heart rate (issue 19): on a 20 s slice of the real recording
(tests/data/realdata/CHB_CONV05-first260.get; attribution in its README) the only rhythm in the
heart band is a line near 43/min with harmonics, on the anterior electrodes; nothing stands
above the noise near the stated 135/min; our detector on the reconstructed voxels finds the
line, as eitprocessing's RateDetection does on the same signals (docs/real-data.md)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from worker.bench.heart_evidence import evidence
from worker.devices.goettingen import read_get

SLICE = Path(__file__).resolve().parents[2] / "data" / "realdata" / "CHB_CONV05-first260.get"
RING = {"preset": "thorax-1x16", "mesh_size": 0.016}


def test_the_child_slice_holds_a_43_per_min_line_and_nothing_at_135() -> None:
    device = read_get(SLICE)
    assert device.frame_rate == 13.0  # the sidecar's, the only timing the file has
    result = evidence(device.voltages, device.frame_rate, "adult", 135.0, 12.0, device.protocol)
    assert result["heart_band_line_per_min"] == pytest.approx(43, abs=3)
    assert result["line_period_cv"] < 0.05  # a steady rhythm
    assert result["third_harmonic_phase_lock"] > 0.9  # 129/min is its harmonic, not a heart
    assert result["harmonics"][1]["power_over_floor"] > 100
    # on the anterior electrodes (device 1 is at the front; 15, 16, 1, 2, 3 around it)
    electrodes = result["carrier_electrodes"]["drive"] + result["carrier_electrodes"]["measure"]
    assert set(electrodes) <= {15, 16, 1, 2, 3}
    assert result["global_peak_near_stated_over_noise_peak"] < 3
    assert result["carrier_peak_near_stated_over_noise_peak"] < 3
    # the frame rate that would put the line at 135/min
    assert result["frame_rate_for_stated_heart"] == pytest.approx(41, abs=2)


@pytest.mark.usefixtures("model_cache_dir")
def test_detector_on_voxels_finds_the_line_as_eitprocessing_does() -> None:
    eitprocessing = pytest.importorskip("eitprocessing")
    from eitprocessing.datahandling.eitdata import EITData, Vendor
    from eitprocessing.features.rate_detection import RateDetection

    from worker.devices.importer import read_recording
    from worker.forward import load_model
    from worker.recon.base import create, reconstruct_recording
    from worker.ventilation.heart import detect_rates
    from worker.ventilation.signal import sample_frequency, voxel_impedance

    assert eitprocessing
    rec, _ = read_recording(SLICE, "get", geometry=RING, grid=[8, 16, 16])
    model = load_model(**{k: rec.meta[k] for k in ("geometry", "protocol", "grid")})
    volumes, _ = reconstruct_recording(create("greit", model), rec.voltages, rec.reference)
    voxels = voxel_impedance(volumes, model.mask)
    rate = sample_frequency(rec.frame_times)
    ours = detect_rates(voxels, rate, "adult")
    n, v = voxels.shape
    data = EITData(path="", nframes=n, time=np.asarray(rec.frame_times), sample_frequency=rate,
                   vendor=Vendor.SIMULATED, pixel_impedance=voxels.reshape(n, 1, v),
                   suppress_simulated_warning=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, heart = RateDetection("adult").apply(data)
    assert ours.heart_hz == pytest.approx(heart, abs=1e-3)
    assert ours.heart_per_min == pytest.approx(43, abs=3)
