"""`eitmon parameters` on a small simulated tidal-breathing recording."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from worker.cli.main import app
from worker.recording import Reconstruction, Recording
from worker.simulation import simulate
from worker.simulation.cases import timeline
from worker.ventilation.breaths import BreathDetector, detect_breaths
from worker.ventilation.signal import global_impedance

COARSE = {"preset": "thorax-2x16", "mesh_size": 0.025}
GRID = (6, 12, 12)
DURATION = 25.0
BREATH_KEYS = {"start_s", "end_inspiration_s", "end_s", "tiv", "eeli", "left_pct", "right_pct",
               "cov_x_pct", "cov_y_pct", "cov_z_pct", "gi", "silent_dependent_pct",
               "silent_nondependent_pct"}


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    rec = simulate("tidal-breathing", snr_db=None, geometry=COARSE, grid=GRID,
                   duration=DURATION)
    path = tmp_path_factory.mktemp("parameters") / "tidal.npz"
    rec.save(path)
    return path


def _run(*args: str) -> str:
    result = CliRunner().invoke(app, ["parameters", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_json_document(recording) -> None:
    document = json.loads(_run(str(recording), "--json"))
    breaths, summary = document["breaths"], document["summary"]
    assert len(breaths) >= 3
    for breath in breaths:
        assert BREATH_KEYS <= breath.keys()
        assert breath["start_s"] < breath["end_inspiration_s"] < breath["end_s"]
        assert breath["left_pct"] + breath["right_pct"] == pytest.approx(100.0)
        assert breath["tiv"] > 0
    assert 60 / 5.4 <= summary["respiratory_rate_per_min"] <= 60 / 3.4
    assert summary["heart_rate_per_min"] == pytest.approx(72, abs=3)  # the phantom's 1.2 Hz
    assert summary["mean"]["left_pct"] > 0 and summary["units"]["tiv"].startswith("a.u.")


def test_breaths_of_the_truth_agree_with_the_simulation_and_eitprocessing(recording) -> None:
    """The truth's global curve (heart included): our breaths equal eitprocessing's, start
    and end where the simulated breaths start (within two frames: the heartbeat moves the
    flat minimum), and the online detector finds them at the same frames."""
    from eitprocessing.datahandling.continuousdata import ContinuousData
    from eitprocessing.features.breath_detection import BreathDetection

    rec = Recording.load(recording)
    curve = global_impedance(rec.truth, rec.mask)
    ours = detect_breaths(curve, rec.frame_times)
    data = ContinuousData(label="g", name="g", unit="a.u.", category="impedance",
                          time=rec.frame_times, values=curve, sample_frequency=20.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = BreathDetection().find_breaths(data).values
    assert [(b.start_s, b.end_inspiration_s, b.end_s) for b in ours] == \
        [tuple(b) for b in reference]
    starts = timeline("tidal-breathing", 0.24, duration=DURATION).end_expiration
    for breath in ours:
        assert np.abs(starts - breath.start).min() <= 2
        assert np.abs(starts - breath.end).min() <= 2
    detector = BreathDetector(20.0)
    online = [b for t, v in zip(rec.frame_times, curve, strict=True)
              for b in detector.push(t, v).breaths]
    assert {(b.start, b.end) for b in online} >= {(b.start, b.end) for b in ours[1:]}


def test_table_and_files(recording, tmp_path) -> None:
    output = _run(str(recording), "--out", str(tmp_path / "p.csv"), "--nifti",
                  str(tmp_path / "nii"), "--fhir", str(tmp_path / "fhir.json"))
    assert "respiratory rate" in output and "CoVz" in output and "truth" in output
    assert (tmp_path / "p.csv").read_text().startswith("index,start_s,")
    assert {p.name for p in (tmp_path / "nii").iterdir()} >= {"tidal_images.nii.gz",
                                                              "impedance.nii.gz"}
    assert json.loads((tmp_path / "fhir.json").read_text())["resourceType"] == "Bundle"
    _run(str(recording), "--out", str(tmp_path / "p.json"), "--position", "prone")
    document = json.loads((tmp_path / "p.json").read_text())
    assert document["summary"]["position"] == "prone"


def test_a_reconstruction_file(recording, tmp_path) -> None:
    """Frame times come from the source recording; without it, from --frame-rate."""
    rec = Recording.load(recording)
    meta = {"method": "tikhonov", "source": str(recording),
            "model": {k: rec.meta[k] for k in ("geometry", "protocol", "grid")}}
    recon = Reconstruction(volumes=rec.truth, seconds_per_frame=np.zeros(rec.n_frames),
                           iterations=np.ones(rec.n_frames, dtype=int), mask=rec.mask, meta=meta)
    path = tmp_path / "recon.npz"
    recon.save(path)
    truth = json.loads(_run(str(recording), "--json"))
    with_source = json.loads(_run(str(path), "--json"))
    assert with_source["breaths"] == truth["breaths"]
    recon_alone = Reconstruction(volumes=rec.truth, seconds_per_frame=np.zeros(rec.n_frames),
                                 iterations=np.ones(rec.n_frames, dtype=int), mask=rec.mask,
                                 meta={"method": "tikhonov", "source": "gone.npz"})
    recon_alone.save(path)
    alone = json.loads(_run(str(path), "--json", "--frame-rate", "10"))
    assert any("--frame-rate" in note for note in alone["summary"]["notes"])
    assert any("geometry unknown" in note for note in alone["summary"]["notes"])
    assert alone["summary"]["respiratory_rate_per_min"] == pytest.approx(
        truth["summary"]["respiratory_rate_per_min"] / 2, rel=0.05)


def test_a_file_without_a_whole_breath(recording, tmp_path) -> None:
    rec = Recording.load(recording)
    frames = slice(0, 40)  # 2 s
    Recording(voltages=rec.voltages[frames], reference=rec.reference,
              frame_times=rec.frame_times[frames], mask=rec.mask, meta=rec.meta,
              truth=rec.truth[frames]).save(tmp_path / "short.npz")
    output = _run(str(tmp_path / "short.npz"))
    assert "0 breaths" in output and "no complete breath" in output
    document = json.loads(_run(str(tmp_path / "short.npz"), "--json"))
    assert document["breaths"] == [] and document["summary"]["respiratory_rate_per_min"] is None


def test_errors(recording, tmp_path, fails_cleanly) -> None:
    rec = Recording.load(recording)
    Recording(voltages=rec.voltages, reference=rec.reference, frame_times=rec.frame_times,
              mask=rec.mask, meta=rec.meta).save(tmp_path / "real.npz")
    fails_cleanly(["parameters", str(tmp_path / "real.npz")], "no ground truth")
    fails_cleanly(["parameters", str(recording), "--out", str(tmp_path / "p.txt")],
                  ".json or .csv")
    fails_cleanly(["parameters", str(recording), "--position", "sideways"], "sideways")
    fails_cleanly(["parameters", str(recording), "--baseline", "yesterday"], "--baseline")
