"""`eitmon metrics RECON.npz TRUTH.npz`: table, JSON, and clean errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from worker.cli.main import app
from worker.recording import Reconstruction

runner = CliRunner()


def test_json_for_double_truth(recon_path: Path, recording_path: Path) -> None:
    result = runner.invoke(app, ["metrics", str(recon_path), str(recording_path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["method"] == "tikhonov" and data["frames"] == 3
    assert data["err"] == pytest.approx([1.0] * 3) and data["mean"]["cc"] == pytest.approx(1.0)
    assert data["window"] == 7 and data["data_range"] > 0
    assert set(data["mean"]) == {"cc", "psnr", "mssim", "err"}


def test_json_identity_has_infinite_psnr(tmp_path: Path, truth: np.ndarray,
                                         recording_path: Path,
                                         make_reconstruction: Callable[..., Reconstruction]
                                         ) -> None:
    path = tmp_path / "same.npz"
    make_reconstruction(truth).save(path)
    result = runner.invoke(app, ["metrics", str(path), str(recording_path), "--json"])
    data = json.loads(result.stdout)
    assert data["psnr"] == ["inf"] * 3 and data["mean"]["mssim"] == pytest.approx(1.0)
    assert data["err"] == [0.0] * 3


def test_table(recon_path: Path, recording_path: Path) -> None:
    result = runner.invoke(app, ["metrics", str(recon_path), str(recording_path)])
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    for needle in ("CC", "PSNR", "MSSIM", "ERR", "mean", "1.0000", "data range",
                   "SSIM window 7x7x7"):
        assert needle in flat


def test_truth_file_may_be_the_recording_itself(recording_path: Path) -> None:
    result = runner.invoke(app, ["metrics", str(recording_path), str(recording_path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["mean"]["err"] == 0.0


def test_missing_file(tmp_path: Path, recording_path: Path, fails_cleanly) -> None:
    fails_cleanly(["metrics", str(tmp_path / "none.npz"), str(recording_path)], "none.npz")


def test_no_truth(recon_path: Path, real_recording_path: Path, fails_cleanly) -> None:
    fails_cleanly(["metrics", str(recon_path), str(real_recording_path)], "TRUTH",
                   "no ground truth")


def test_shape_mismatch(tmp_path: Path, truth: np.ndarray, recording_path: Path,
                        make_reconstruction: Callable[..., Reconstruction], fails_cleanly) -> None:
    path = tmp_path / "short.npz"
    make_reconstruction(truth[:2]).save(path)
    fails_cleanly(["metrics", str(path), str(recording_path)], "do not match")


def test_not_an_archive(tmp_path: Path, recording_path: Path, fails_cleanly) -> None:
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"\x00" * 10)
    fails_cleanly(["metrics", str(junk), str(recording_path)], "RECON", "junk.npz")
