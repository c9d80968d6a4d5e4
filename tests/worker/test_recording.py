"""The recording and reconstruction .npz formats: round trips and every validation error."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from worker.recording import Reconstruction, Recording, RecordingError, load_volumes


def test_recording_round_trip(tmp_path: Path, recording: Recording) -> None:
    path = tmp_path / "exact-name.rec"  # no .npz suffix: the file keeps its name
    recording.save(path)
    loaded = Recording.load(path)
    assert path.is_file()
    assert loaded.n_frames == 3 and loaded.n_measurements == 20
    for key in ("voltages", "reference", "frame_times", "mask", "truth"):
        np.testing.assert_array_equal(getattr(loaded, key), getattr(recording, key))
    assert loaded.mask.dtype == bool and loaded.truth.dtype == np.float32
    assert loaded.meta == recording.meta
    assert loaded.meta["grid"] == [8, 12, 10] and loaded.meta["snr_db"] == 40.0


def test_recording_without_truth(real_recording_path: Path) -> None:
    rec = Recording.load(real_recording_path)
    assert rec.truth is None
    with np.load(real_recording_path) as npz:
        assert "truth" not in npz.files
    with pytest.raises(RecordingError, match="truth"):
        load_volumes(real_recording_path)


def test_recording_is_frozen(recording: Recording) -> None:
    with pytest.raises(AttributeError):
        recording.meta = {}  # type: ignore[misc]


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(kwargs: dict[str, Any]) -> None:
        kwargs[key] = value(kwargs) if callable(value) else value
    return change


def _poke(key: str, index: tuple[int, ...], value: float) -> Callable[[dict[str, Any]], None]:
    def change(kwargs: dict[str, Any]) -> None:
        kwargs[key] = kwargs[key].copy()
        kwargs[key][index] = value
    return change


def _drop_meta(name: str) -> Callable[[dict[str, Any]], None]:
    return _set("meta", lambda kw: {k: v for k, v in kw["meta"].items() if k != name})


RECORDING_ERRORS = {
    "voltages 1-D": (_set("voltages", lambda kw: kw["voltages"][0]), "voltages"),
    "voltages text": (_set("voltages", lambda kw: kw["voltages"].astype(str)), "voltages"),
    "voltages NaN": (_poke("voltages", (1, 2), np.nan), "voltages"),
    "voltages Inf": (_poke("voltages", (0, 0), np.inf), "voltages"),
    "reference NaN": (_poke("reference", (3,), np.nan), "reference"),
    "reference Inf": (_poke("reference", (3,), -np.inf), "reference"),
    "reference length": (_set("reference", lambda kw: kw["reference"][:-1]), "reference"),
    "reference 2-D": (_set("reference", lambda kw: kw["reference"][None]), "reference"),
    "frame_times T": (_set("frame_times", lambda kw: kw["frame_times"][:2]), "frame_times"),
    "frame_times flat": (_poke("frame_times", (2,), 0.05), "frame_times"),
    "frame_times back": (_set("frame_times", lambda kw: kw["frame_times"][::-1]), "frame_times"),
    "truth T": (_set("truth", lambda kw: kw["truth"][:2]), "truth"),
    "truth 3-D": (_set("truth", lambda kw: kw["truth"][0]), "truth"),
    "mask vs truth": (_set("mask", lambda kw: kw["mask"][:, :, :-1]), "mask"),
    "mask not bool": (_set("mask", lambda kw: kw["mask"].astype(np.uint8)), "mask"),
    "mask empty": (_set("mask", lambda kw: np.zeros_like(kw["mask"])), "mask"),
    "meta not JSON": (_set("meta", "{geometry: oops"), "meta"),
    "meta a list": (_set("meta", "[1, 2]"), "meta"),
    "meta unserialisable": (_set("meta", lambda kw: {**kw["meta"], "x": object()}), "meta"),
    "meta no geometry": (_drop_meta("geometry"), "geometry"),
    "meta no protocol": (_drop_meta("protocol"), "protocol"),
    "meta no grid": (_drop_meta("grid"), "grid"),
    "meta grid vs mask": (_set("meta", lambda kw: {**kw["meta"], "grid": [8, 12, 12]}),
                          "meta.grid"),
    "meta grid invalid": (_set("meta", lambda kw: {**kw["meta"], "grid": "big"}), "meta.grid"),
}


@pytest.mark.parametrize("change, key", RECORDING_ERRORS.values(), ids=RECORDING_ERRORS.keys())
def test_recording_validation(recording_kwargs: dict[str, Any], change: Callable, key: str
                              ) -> None:
    change(recording_kwargs)
    with pytest.raises(RecordingError, match=key):
        Recording(**recording_kwargs)


def test_recording_error_is_value_error() -> None:
    assert issubclass(RecordingError, ValueError)


def _write(path: Path, arrays: dict[str, Any]) -> Path:
    np.savez(path, **arrays)
    return path


def _recording_arrays(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {**kwargs, "meta": np.array(json.dumps(kwargs["meta"]))}


@pytest.mark.parametrize("key", ["voltages", "reference", "frame_times", "meta"])
def test_recording_load_missing_key(tmp_path: Path, recording_kwargs: dict[str, Any],
                                    key: str) -> None:
    arrays = _recording_arrays(recording_kwargs)
    del arrays[key]
    path = _write(tmp_path / "rec.npz", arrays)
    with pytest.raises(RecordingError, match=f"rec.npz: missing key.*{key}"):
        Recording.load(path)


def test_recording_without_mask(tmp_path: Path, recording_kwargs: dict[str, Any]) -> None:
    """A real recording needs no mask (reconstruction derives it); truth still needs one."""
    arrays = _recording_arrays({**recording_kwargs, "truth": None})
    del arrays["mask"], arrays["truth"]
    loaded = Recording.load(_write(tmp_path / "rec.npz", arrays))
    assert loaded.mask is None
    loaded.save(tmp_path / "again.npz")
    assert "mask" not in np.load(tmp_path / "again.npz").files
    with pytest.raises(RecordingError, match="mask: a recording with truth"):
        Recording(**{**recording_kwargs, "mask": None})


def test_recording_load_names_file_and_key(tmp_path: Path,
                                           recording_kwargs: dict[str, Any]) -> None:
    arrays = _recording_arrays(recording_kwargs)
    arrays["meta"] = np.array("not json")
    path = _write(tmp_path / "bad.npz", arrays)
    with pytest.raises(RecordingError, match=r"bad\.npz: meta: not valid JSON"):
        Recording.load(path)


def test_load_rejects_non_archive(tmp_path: Path) -> None:
    path = tmp_path / "junk.npz"
    path.write_text("not a zip")
    with pytest.raises(RecordingError, match="junk.npz"):
        Recording.load(path)
    with pytest.raises(RecordingError, match="junk.npz"):
        load_volumes(path)


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Recording.load(tmp_path / "nowhere.npz")


def test_reconstruction_round_trip(tmp_path: Path, truth: np.ndarray,
                                   make_reconstruction: Callable[..., Reconstruction]) -> None:
    recon = make_reconstruction(truth.astype(np.float64), method="d2ip")
    path = tmp_path / "RECON.npz"
    recon.save(path)
    loaded = Reconstruction.load(path)
    assert loaded.volumes.dtype == np.float32 and loaded.iterations.dtype == np.int64
    np.testing.assert_array_equal(loaded.volumes, truth)
    np.testing.assert_array_equal(loaded.seconds_per_frame, recon.seconds_per_frame)
    np.testing.assert_array_equal(loaded.iterations, recon.iterations)
    np.testing.assert_array_equal(loaded.mask, recon.mask)
    assert loaded.meta == {"method": "d2ip", "source": "rec.npz", "settings": {"mu": 0.01}}
    assert loaded.n_frames == 3


def _recon_kwargs(recon: Reconstruction) -> dict[str, Any]:
    return {"volumes": recon.volumes, "seconds_per_frame": recon.seconds_per_frame,
            "iterations": recon.iterations, "mask": recon.mask, "meta": recon.meta}


RECONSTRUCTION_ERRORS = {
    "volumes 3-D": (_set("volumes", lambda kw: kw["volumes"][0]), "volumes"),
    "volumes NaN": (_poke("volumes", (0, 1, 2, 3), np.nan), "volumes"),
    "seconds T": (_set("seconds_per_frame", lambda kw: kw["seconds_per_frame"][:1]),
                  "seconds_per_frame"),
    "seconds negative": (_poke("seconds_per_frame", (0,), -1.0), "seconds_per_frame"),
    "iterations float": (_set("iterations", lambda kw: kw["iterations"] * 1.0), "iterations"),
    "iterations T": (_set("iterations", lambda kw: kw["iterations"][:2]), "iterations"),
    "mask shape": (_set("mask", lambda kw: kw["mask"][:-1]), "mask"),
    "meta no method": (_set("meta", {"source": "x"}), "method"),
    "meta not JSON": (_set("meta", "nope"), "meta"),
}


@pytest.mark.parametrize("change, key", RECONSTRUCTION_ERRORS.values(),
                         ids=RECONSTRUCTION_ERRORS.keys())
def test_reconstruction_validation(truth: np.ndarray, change: Callable, key: str,
                                   make_reconstruction: Callable[..., Reconstruction]) -> None:
    kwargs = _recon_kwargs(make_reconstruction(truth))
    change(kwargs)
    with pytest.raises(RecordingError, match=key):
        Reconstruction(**kwargs)


def test_load_volumes_reads_both_kinds(recording_path: Path, recon_path: Path,
                                       truth: np.ndarray, mask: np.ndarray) -> None:
    volumes, got_mask, label = load_volumes(recording_path)
    assert label == "truth"
    np.testing.assert_array_equal(volumes, truth)
    np.testing.assert_array_equal(got_mask, mask)
    volumes, got_mask, label = load_volumes(recon_path)
    assert label == "tikhonov"
    np.testing.assert_allclose(volumes, 2 * truth)
    np.testing.assert_array_equal(got_mask, mask)
