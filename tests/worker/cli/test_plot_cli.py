"""`eitmon plot FILE.npz [--compare OTHER.npz ...] -o FIG.png`: PNGs and clean errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from matplotlib.image import imread
from typer.testing import CliRunner

from worker.cli.main import app

runner = CliRunner()


def test_plot_compare_writes_png_of_size(tmp_path: Path, recording_path: Path,
                                         recon_path: Path) -> None:
    out = tmp_path / "fig.png"
    result = runner.invoke(app, ["plot", str(recording_path), "--compare", str(recon_path),
                                 "--compare", str(recon_path), "--frame", "-1", "-o", str(out),
                                 "--size", "900x700"])
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 0
    assert imread(out).shape[:2] == (700, 900)


def test_plot_default_size(tmp_path: Path, recon_path: Path) -> None:
    out = tmp_path / "fig.png"
    result = runner.invoke(app, ["plot", str(recon_path), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert imread(out).shape[:2] == (900, 1600)


@pytest.mark.parametrize("size", ["1600", "0x10", "axb", "20000x10"])
def test_bad_size(tmp_path: Path, recon_path: Path, size: str, fails_cleanly) -> None:
    fails_cleanly(["plot", str(recon_path), "-o", str(tmp_path / "f.png"), "--size", size],
                   "--size")


def test_frame_out_of_range(tmp_path: Path, recon_path: Path, fails_cleanly) -> None:
    fails_cleanly(["plot", str(recon_path), "-o", str(tmp_path / "f.png"), "--frame", "3"],
                   "frame 3 out of range")


def test_no_truth(tmp_path: Path, real_recording_path: Path, fails_cleanly) -> None:
    fails_cleanly(["plot", str(real_recording_path), "-o", str(tmp_path / "f.png")],
                   "no ground truth")


def test_missing_output_folder(tmp_path: Path, recon_path: Path, fails_cleanly) -> None:
    fails_cleanly(["plot", str(recon_path), "-o", str(tmp_path / "no" / "f.png")],
                   "does not exist")


def test_missing_compare_file(tmp_path: Path, recon_path: Path, fails_cleanly) -> None:
    fails_cleanly(["plot", str(recon_path), "--compare", str(tmp_path / "x.npz"), "-o",
                    str(tmp_path / "f.png")], "x.npz")
