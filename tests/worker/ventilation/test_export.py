from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from worker.ventilation.export import (
    CODE_SYSTEM,
    export_nifti,
    fhir_bundle,
    nifti_affine,
    save_nifti,
    to_json,
    write_csv,
)
from worker.ventilation.parameters import AnalysisSettings, analyse

from .conftest import SHAPE, breathing

nib = pytest.importorskip("nibabel")


@pytest.fixture
def analysis(body, space):
    t, _, u = breathing(4, duration=30.0)
    volumes = np.zeros((u.size, *SHAPE))
    volumes[:, 1:5, 2:8, 1:5] = -0.1 * u[:, None, None, None]
    return analyse(volumes, t, body, space, ring_z=(0.05, 0.09),
                   settings=AnalysisSettings(heart_filter=False))


def test_nifti_is_the_right_way_round(tmp_path, space) -> None:
    """Voxel axes run to the patient's left, posterior and superior; a voxel's world position
    is its LPS centre with x and y negated (RAS), in mm."""
    volume = np.zeros(SHAPE, dtype=np.float32)
    volume[5, 2, 11] = 1.0  # plane 5 (cranial), row 2 (anterior), column 11 (patient left)
    path = tmp_path / "v.nii.gz"
    save_nifti(path, volume, space)
    image = nib.load(path)
    assert nib.aff2axcodes(image.affine) == ("L", "P", "S")
    assert np.allclose(image.affine, nifti_affine(space))
    assert int(image.header["qform_code"]) == 1 and int(image.header["sform_code"]) == 1
    data = np.asarray(image.dataobj)
    i, j, k = np.argwhere(data == 1.0)[0]
    world = image.affine @ [i, j, k, 1]
    z, y, x = (c[n] for c, n in zip(space.centres(), (5, 2, 11), strict=True))
    assert np.allclose(world[:3], [-1000 * x, -1000 * y, 1000 * z])
    assert world[0] < 0  # patient left is RAS -x


def test_nifti_series_keeps_the_frame_interval(tmp_path, space) -> None:
    save_nifti(tmp_path / "s.nii", np.zeros((4, *SHAPE)), space, frame_interval_s=0.05)
    image = nib.load(tmp_path / "s.nii")
    assert image.shape == (12, 10, 6, 4)
    assert image.header.get_zooms()[3] == pytest.approx(0.05)


def test_export_nifti_writes_every_image(tmp_path, analysis, space) -> None:
    written = export_nifti(tmp_path / "nii", analysis, space)
    assert {p.name for p in written} == {"tidal_images.nii.gz", "tidal_mean.nii.gz",
                                         "rvd.nii.gz", "lung_mask.nii.gz"}
    tidal = nib.load(tmp_path / "nii" / "tidal_images.nii.gz")
    assert tidal.shape == (12, 10, 6, len(analysis.breaths))


def test_json_csv_and_fhir(tmp_path, analysis) -> None:
    document = json.loads(to_json(analysis))
    assert len(document["breaths"]) == len(analysis.breaths) >= 4
    first = document["breaths"][0]
    assert first["left_pct"] == pytest.approx(0.0) and first["right_pct"] == pytest.approx(100.0)
    assert len(first["ring_planes"]) == 2
    path = tmp_path / "p.csv"
    write_csv(path, analysis)
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == len(analysis.breaths)
    assert float(rows[0]["tiv"]) == pytest.approx(first["tiv"])
    assert "ring2_pct" in rows[0] and "layer4_pct" in rows[0]
    bundle = fhir_bundle(analysis, subject="Patient/1", start_time="2026-01-01T08:00:00+00:00")
    assert bundle["resourceType"] == "Bundle" and len(bundle["entry"]) == len(analysis.breaths)
    observation = bundle["entry"][0]["resource"]
    codes = {c["code"]["coding"][0]["code"]: c["valueQuantity"] for c in observation["component"]}
    assert codes["left_pct"]["unit"] == "%" and codes["rate_per_min"]["unit"] == "/min"
    assert observation["code"]["coding"][0]["system"] == CODE_SYSTEM
    assert observation["effectivePeriod"]["start"].startswith("2026-01-01T08:00")
