from __future__ import annotations

import json

from typer.testing import CliRunner

from worker.cli.main import app
from worker.recording import Recording


def test_simulate_writes_a_recording(tmp_path) -> None:
    geo = tmp_path / "g.json"
    geo.write_text(json.dumps({"preset": "cylinder-2x16", "mesh_size": 0.025}))
    out = tmp_path / "rec.npz"
    res = CliRunner().invoke(app, ["simulate", "edema-left", "--out", str(out), "--frames", "3",
                                   "--geometry", str(geo), "--grid", "8", "12", "12"])
    assert res.exit_code == 0, res.output
    rec = Recording.load(out)
    assert rec.n_frames == 2 and rec.truth.shape == (2, 8, 12, 12)
    assert rec.meta["case"] == "edema-left" and rec.meta["snr_db"] == 50.0


def test_simulate_rejects_unknown_case(tmp_path) -> None:
    res = CliRunner().invoke(app, ["simulate", "asthma", "--out", str(tmp_path / "x.npz")])
    assert res.exit_code == 2 and "unknown case" in res.output
