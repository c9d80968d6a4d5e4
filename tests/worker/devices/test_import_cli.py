"""`eitmon import`: a real slice in, a recording with provenance, check and quality out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from service.contract.stim_patterns import protocol_sha256
from tests.worker.devices.conftest import CHILD, COARSE_RING_GRID, NEONATE, SLICE_FRAMES
from worker.cli.main import app
from worker.devices.known_recordings import KNOWN_RECORDINGS
from worker.recording import Recording


def run(*args: str) -> Any:
    result = CliRunner().invoke(app, ["import", *args])
    assert "Traceback" not in result.output
    return result


def test_imports_with_the_model_check(tmp_path: Path, coarse_ring_model: Any,
                                      coarse_ring_geometry_file: Path) -> None:
    out = tmp_path / "neonate.npz"
    grid = ",".join(map(str, COARSE_RING_GRID))
    result = run(str(NEONATE), "--format", "get", "--out", str(out), "--geometry",
                 str(coarse_ring_geometry_file), "--grid", grid)
    assert result.exit_code == 0, result.output
    assert "40 frames of 208 measurements at 13 frames/s" in result.output
    assert "model check: the measured reference matches" in result.output
    assert "usable channels: 208 of 208" in result.output and "Inéz Frerichs" in result.output
    rec = Recording.load(out)
    assert rec.mask is None and rec.voltages.shape == (SLICE_FRAMES, 208)
    np.testing.assert_allclose(rec.reference, rec.voltages.mean(axis=0))
    np.testing.assert_allclose(np.diff(rec.frame_times), 1 / 13)
    meta = rec.meta
    assert meta["protocol_sha256"] == protocol_sha256(meta["protocol"])
    assert meta["grid"] == COARSE_RING_GRID and meta["protocol_check"]["verdict"] == "ok"
    assert meta["protocol_check"]["overall"] > 0.9
    assert meta["quality"]["usable_fraction"] == 1.0
    source = meta["source"]
    assert source["file"] == NEONATE.name and source["format"] == "get"
    assert source["attribution"] == next(iter(KNOWN_RECORDINGS.values()))["attribution"]
    assert len(source["sha256"]) == 64 and source["frame_rate_from"] == "file"


def test_options_without_a_model(tmp_path: Path) -> None:
    out = tmp_path / "child.npz"
    result = run(str(CHILD), "--format", "get", "--out", str(out), "--no-check", "--rate",
                 "10", "--reference", "first:10", "--attribution", "test data", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["protocol_check"] is None and summary["frame_rate"] == 10.0
    assert summary["source"]["stored"] == "104 values, reciprocals filled in"
    assert summary["source"]["attribution"] == "test data"
    assert summary["quality"]["electrodes"]["reciprocity_error"] is None
    rec = Recording.load(out)
    np.testing.assert_allclose(rec.reference, rec.voltages[:10].mean(axis=0))
    assert rec.meta["reference"] == {"spec": "first:10", "frames": [0, 9], "count": 10}
    assert rec.frame_times[-1] == pytest.approx(3.9)


@pytest.mark.parametrize(("args", "message"), [
    (["--format", "xyz"], "unknown format 'xyz'"),
    (["--format", "eit"], "not a Dräger, Swisstom or CareFusion .eit file"),
    (["--format", "draeger-eit"], "not a Dräger .eit file"),
    (["--format", "sentec-zri"], "pixel images, not electrode voltages"),
    (["--format", "get", "--reference", "window:9-10"], "no frame in"),
    (["--format", "get", "--reference", "last"], "reference: expected"),
    (["--format", "get", "--geometry", "thorax-2x16"], "does not match the geometry's 32"),
    (["--format", "get", "--grid", "8,x,8"], "--grid"),
])
def test_refusals(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "o.npz"
    result = run(str(NEONATE), *args, "--out", str(out), "--no-check")
    assert result.exit_code == 2 and message in result.output
    assert not out.exists()


def test_electrodes_follow_the_device_placement(tmp_path: Path) -> None:
    """Goe-MF II: electrode 1 front, 5 on the patient's left (LPS +x): the other way round
    from our numbering, so the protocol is renumbered (mirrored), the channels kept."""
    from service.contract.geometry import arc_coordinates, resolve_geometry
    from service.contract.protocol import resolve_protocol
    from worker.devices.goettingen import read_get

    out = tmp_path / "rec.npz"
    assert run(str(NEONATE), "--format", "get", "--out", str(out), "--no-check").exit_code == 0
    meta = Recording.load(out).meta
    geometry = resolve_geometry(meta["geometry"])
    outline = geometry.domain.outline(1024)
    arcs = arc_coordinates(outline)
    x = [outline[np.argmin(np.abs(arcs - a)), 0] for a in geometry.electrode_arc]
    model = meta["model_electrode"]
    assert model[0] == 0 and x[model[4]] > 0.1 and x[model[12]] < -0.1  # 5 left, 13 right
    device = resolve_protocol(read_get(NEONATE).protocol).build(16)
    ours = resolve_protocol(meta["protocol"]).build(16)
    np.testing.assert_array_equal(ours.meas_weights[:, model], device.meas_weights)
    np.testing.assert_array_equal(ours.currents[:, model], device.currents)
    assert "renumbered" in meta["protocol_description"]
    plain = tmp_path / "plain.npz"
    assert run(str(NEONATE), "--format", "get", "--out", str(plain), "--no-check",
               "--electrodes", "as-numbered").exit_code == 0
    assert Recording.load(plain).meta["protocol"] == read_get(NEONATE).protocol


def test_refuses_a_file_of_the_opposite_sign(tmp_path: Path, coarse_ring_model: Any,
                                             coarse_ring_geometry_file: Path) -> None:
    """The neonate slice with its measurements negated: the same count, the opposite sign of
    the protocol's; refused with the reason, nothing written."""
    frames = np.fromfile(NEONATE, dtype="<f4").reshape(-1, 256).copy()
    frames[:, :208] *= -1
    flipped = tmp_path / "flipped.get"
    frames.tofile(flipped)
    out = tmp_path / "o.npz"
    result = run(str(flipped), "--format", "get", "--out", str(out), "--rate", "13",
                 "--geometry", str(coarse_ring_geometry_file), "--grid",
                 ",".join(map(str, COARSE_RING_GRID)))
    assert result.exit_code == 2 and "sign looks flipped" in result.output
    assert "not written" in result.output and not out.exists()
