"""`eitmon train diffusion-prior --out DIR`: seeded, with progress, and its files load."""

from __future__ import annotations

import json
from pathlib import Path

from matplotlib.image import imread
from safetensors.torch import load_file
from typer.testing import CliRunner

from worker.cli.main import app
from worker.recon.diffinr.sds import SDSPrior

runner = CliRunner()
TINY = ["--images", "64", "--steps", "3", "--batch", "4", "--samples", "2"]


def test_tiny_training_run_writes_a_loadable_prior(tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "diffusion-prior", "--out", str(tmp_path / "a"), *TINY])
    assert result.exit_code == 0, result.output
    assert "diffusion prior" in result.output and "3/3" in result.output  # the progress bar
    record = json.loads((tmp_path / "a" / "loss.json").read_text())
    assert len(record["loss"]) == 3 and record["train"]["steps"] == 3
    assert imread(tmp_path / "a" / "loss.png").shape[0] > 0
    assert imread(tmp_path / "a" / "samples.png").shape[0] > 0
    prior = SDSPrior.load(tmp_path / "a" / "prior.safetensors")
    assert prior.resolution == 32

    again = runner.invoke(app, ["train", "diffusion-prior", "--out", str(tmp_path / "b"), *TINY])
    assert again.exit_code == 0, again.output
    a, b = (load_file(str(tmp_path / d / "prior.safetensors")) for d in "ab")
    assert all(a[k].equal(b[k]) for k in a)  # seeded: the same weights twice


def test_unwritable_out_fails_cleanly(tmp_path: Path, fails_cleanly) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    fails_cleanly(["train", "diffusion-prior", "--out", str(blocker / "x"), *TINY], "--out")
