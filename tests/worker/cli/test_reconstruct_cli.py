"""`eitmon reconstruct`: a reconstruction file out, clear errors (exit 2) for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from worker.cli.main import app
from worker.forward.model import ForwardModel
from worker.recording import Reconstruction, Recording


def recording(coarse_model: ForwardModel, n_meas: int | None = None) -> Recording:
    """Three frames around the model's reference voltages, meta naming the model."""
    v0 = coarse_model.reference_voltages[:n_meas]
    rng = np.random.default_rng(0)
    return Recording(voltages=v0 * (1 + 0.01 * rng.standard_normal((3, v0.size))),
                     reference=v0, frame_times=np.arange(3) / 20.0, mask=coarse_model.mask,
                     meta=coarse_model.spec)


def run(*args: str):
    res = CliRunner().invoke(app, ["reconstruct", *args])
    assert "Traceback" not in res.output
    return res


def test_writes_a_reconstruction(tmp_path: Path, coarse_model: ForwardModel) -> None:
    recording(coarse_model).save(tmp_path / "rec.npz")
    out = tmp_path / "recon.npz"
    res = run(str(tmp_path / "rec.npz"), "--method", "tikhonov", "--out", str(out),
              "--option", "mu=0.3", "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output.strip().splitlines()[-1])
    assert summary["frames"] == 3 and summary["settings"]["mu"] == 0.3
    recon = Reconstruction.load(out)
    assert recon.volumes.shape == (3, *coarse_model.grid.shape)
    assert recon.meta["method"] == "tikhonov"
    assert recon.meta["settings"]["mu"] == 0.3 and recon.meta["device"] == "cpu"
    assert np.array_equal(recon.mask, coarse_model.mask) and np.all(recon.iterations == 1)
    inside = coarse_model.mask
    assert recon.volumes[:, inside].any() and not recon.volumes[:, ~inside].any()
    assert summary["batch"] == 32 and summary["frames_per_second"] > 0


def test_one_frame_at_a_time_gives_the_batched_volumes(tmp_path: Path,
                                                       coarse_model: ForwardModel) -> None:
    recording(coarse_model).save(tmp_path / "rec.npz")
    volumes = []
    for batch in ("1", "32"):
        out = tmp_path / f"recon-{batch}.npz"
        res = run(str(tmp_path / "rec.npz"), "--method", "tikhonov", "--out", str(out),
                  "--option", "mu=0.3", "--batch", batch, "--json")
        assert res.exit_code == 0, res.output
        assert json.loads(res.output.strip().splitlines()[-1])["batch"] == int(batch)
        volumes.append(Reconstruction.load(out).volumes)
    # one frame goes through the fused kernels' product from L's float16 copy (linear.py), a
    # batch through torch's matmul in float32: within 1e-3 of each frame's norm
    for one, batched in zip(volumes[0], volumes[1], strict=True):
        assert np.linalg.norm(one - batched) <= 1e-3 * np.linalg.norm(batched)


def test_rejects_unknown_method(tmp_path: Path, coarse_model: ForwardModel) -> None:
    recording(coarse_model).save(tmp_path / "rec.npz")
    res = run(str(tmp_path / "rec.npz"), "--method", "magic", "--out", str(tmp_path / "o.npz"))
    assert res.exit_code == 2
    assert "unknown method 'magic'" in res.output and "tikhonov" in res.output


def test_rejects_wrong_measurement_count(tmp_path: Path, coarse_model: ForwardModel) -> None:
    recording(coarse_model, n_meas=20).save(tmp_path / "rec.npz")
    res = run(str(tmp_path / "rec.npz"), "--method", "tikhonov", "--out",
              str(tmp_path / "o.npz"))
    assert res.exit_code == 2
    assert "20 measurements" in res.output and str(coarse_model.n_measurements) in res.output
    assert not (tmp_path / "o.npz").exists()


def test_rejects_nan_frames(tmp_path: Path, coarse_model: ForwardModel) -> None:
    recording(coarse_model).save(tmp_path / "good.npz")
    with np.load(tmp_path / "good.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["voltages"][1, 5] = np.nan
    np.savez(tmp_path / "nan.npz", **arrays)
    res = run(str(tmp_path / "nan.npz"), "--method", "tikhonov", "--out",
              str(tmp_path / "o.npz"))
    assert res.exit_code == 2 and "voltages: contains NaN or Inf" in res.output


def test_rejects_bad_options_and_devices(tmp_path: Path, coarse_model: ForwardModel) -> None:
    recording(coarse_model).save(tmp_path / "rec.npz")
    base = [str(tmp_path / "rec.npz"), "--method", "tikhonov", "--out", str(tmp_path / "o.npz")]
    res = run(*base, "--option", "bogus=1")
    assert res.exit_code == 2 and "bogus" in res.output
    res = run(*base, "--option", "mu")
    assert res.exit_code == 2 and "KEY=VALUE" in res.output
    res = run(*base, "--device", "tpu")
    assert res.exit_code == 2 and "cpu or cuda" in res.output
    if not torch.cuda.is_available():
        res = run(*base, "--device", "cuda")
        assert res.exit_code == 2 and "no CUDA device" in res.output


def test_count_is_checked_before_any_model(tmp_path: Path, coarse_model: ForwardModel,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import worker.forward

    def no_model(**_: object) -> None:
        raise AssertionError("a model was built")

    monkeypatch.setattr(worker.forward, "load_model", no_model)
    recording(coarse_model, n_meas=20).save(tmp_path / "rec.npz")
    res = run(str(tmp_path / "rec.npz"), "--method", "tikhonov", "--out",
              str(tmp_path / "o.npz"))
    assert res.exit_code == 2 and "the protocol of its meta" in res.output


def test_frames_and_reference(tmp_path: Path, coarse_model: ForwardModel) -> None:
    rec = recording(coarse_model)
    rec.save(tmp_path / "rec.npz")
    base = [str(tmp_path / "rec.npz"), "--method", "tikhonov", "--out", str(tmp_path / "o.npz")]
    res = run(*base, "--frames", "1:3", "--reference", "frames:0-2", "--json")
    assert res.exit_code == 0, res.output
    recon = Reconstruction.load(tmp_path / "o.npz")
    assert recon.n_frames == 2 and recon.meta["frames"] == [1, 3]
    assert recon.meta["reference"] == "frames:0-2"
    assert recon.meta["protocol_check"]["verdict"] == "ok"
    np.save(tmp_path / "ref.npy", rec.voltages[0])
    res = run(*base, "--frames", "0:1", "--reference", str(tmp_path / "ref.npy"), "--json")
    assert res.exit_code == 0, res.output
    assert not Reconstruction.load(tmp_path / "o.npz").volumes.any()  # frame 0 vs itself
    np.save(tmp_path / "short.npy", rec.voltages[0, :5])
    for args, message in [(["--reference", str(tmp_path / "short.npy")], "has shape (5,)"),
                          (["--reference", "window:50-60"], "no frame in"),
                          (["--frames", "3:5"], "frames '3:5'")]:
        res = run(*base, *args)
        assert res.exit_code == 2 and message in res.output, res.output


def test_refuses_a_flipped_sign(tmp_path: Path, coarse_model: ForwardModel) -> None:
    """Measured voltages of the opposite sign to the model's: a flipped protocol."""
    rec = recording(coarse_model)
    Recording(voltages=-rec.voltages, reference=-rec.reference, frame_times=rec.frame_times,
              meta=rec.meta).save(tmp_path / "rec.npz")
    res = run(str(tmp_path / "rec.npz"), "--method", "tikhonov", "--out",
              str(tmp_path / "o.npz"))
    assert res.exit_code == 2 and "sign looks flipped" in res.output
    assert not (tmp_path / "o.npz").exists()


def test_excludes_electrodes_and_weights_by_noise(tmp_path: Path,
                                                  coarse_model: ForwardModel) -> None:
    v0 = coarse_model.reference_voltages
    rng = np.random.default_rng(0)
    Recording(voltages=v0 * (1 + 0.01 * rng.standard_normal((10, v0.size))), reference=v0,
              frame_times=np.arange(10) / 20.0, meta=coarse_model.spec).save(tmp_path / "rec.npz")
    out = tmp_path / "recon.npz"
    res = run(str(tmp_path / "rec.npz"), "--method", "tikhonov", "--out", str(out),
              "--option", "mu=0.3", "--exclude-electrodes", "3,7", "--noise-weights")
    assert res.exit_code == 0, res.output
    meta = Reconstruction.load(out).meta
    assert meta["data_weights"] == {"exclude_electrodes": [3, 7], "noise": "data"}
    res = run(str(tmp_path / "rec.npz"), "--method", "tikhonov", "--out", str(out),
              "--exclude-electrodes", "33")
    assert res.exit_code == 2 and "1 to 32" in res.output
    res = run(str(tmp_path / "rec.npz"), "--method", "tikhonov", "--out", str(out),
              "--exclude-electrodes", "flagged")
    assert res.exit_code == 2 and "no quality report" in res.output
