"""The real-data proof's pieces on the 40-frame slices (tests/data/realdata; attribution in
its README): image checks, the exclusion check and the figure with its attribution."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from worker.bench.realdata import (
    RECORDINGS,
    exclusion_check,
    figure,
    heart_region,
    image_checks,
    ring_plane,
)
from worker.devices.importer import read_recording
from worker.forward import load_model
from worker.forward.model import ForwardModel
from worker.metrics import cc

DATA = Path(__file__).resolve().parents[2] / "data" / "realdata"
RING = {"preset": "thorax-1x16", "mesh_size": 0.016}


@pytest.fixture(scope="module")
def neonate(model_cache_dir: str):
    rec, _ = read_recording(DATA / "P04P-1016-first40.get", "get", geometry=RING,
                            grid=[8, 16, 16])
    model = load_model(**{k: rec.meta[k] for k in ("geometry", "protocol", "grid")})
    return rec, model


def two_lungs(model: ForwardModel) -> np.ndarray:
    """Ventilation in two lateral blobs, nothing elsewhere."""
    _, rows, cols = np.indices(model.grid.shape)
    image = np.zeros(model.grid.shape)
    for centre in (cols.max() * 0.25, cols.max() * 0.75):
        image += np.exp(-((cols - centre) ** 2 + (rows - rows.max() * 0.55) ** 2) / 4.0)
    return np.where(model.mask, image, 0.0)


def test_image_checks_see_two_lungs(neonate) -> None:
    _, model = neonate
    checks = image_checks(two_lungs(model), model)
    assert checks["left_share"] == pytest.approx(0.5, abs=0.05)
    assert checks["regions_in_ring_plane"] == 2
    assert checks["opposite_vs_ventilation"] == 0.0
    assert checks["heart_vs_lung"] < 0.5
    assert heart_region(model).any() and 0 <= ring_plane(model) < model.grid.planes
    # the lungs sit a little posterior (rows x 0.55): dependent supine, less so prone
    prone = image_checks(two_lungs(model), model, position="prone")["dependent_share"]
    assert checks["dependent_share"] > 0.5 > prone
    assert checks["dependent_share"] + prone == pytest.approx(1.0)


def test_exclusion_check_on_the_real_slice(neonate) -> None:
    rec, model = neonate
    from worker.bench.realdata import tidal_of
    from worker.recon.base import create, reconstruct_recording

    volumes, _ = reconstruct_recording(create("greit", model), rec.voltages, rec.reference)
    curve = -volumes[:, model.mask].sum(axis=1)
    starts, ends = [int(np.argmin(curve))], [int(np.argmax(curve))]
    tidal = tidal_of(volumes, model, starts, ends)
    result = exclusion_check(rec, model, "greit", 3, tidal, starts, ends)
    assert result["electrode"] == 4
    assert result["cc"] >= 0.7 and result["err"] <= 0.75, result


def test_figure_carries_the_attribution(neonate, tmp_path: Path) -> None:
    _, model = neonate
    image = two_lungs(model)
    figure({"neonate": {"tikhonov": image, "greit": image}}, {"neonate": model},
           tmp_path / "realdata.png")
    assert (tmp_path / "realdata.png").stat().st_size > 10_000
    assert "Inéz Frerichs" in RECORDINGS[0].attribution
    assert "Critical Care Medicine 35(8):1972-8, 2007" in RECORDINGS[1].attribution


def test_d2ip_on_the_real_slices_tidal_difference(neonate) -> None:
    """D2IP with its real-data defaults (a short first frame here) on the slice's tidal
    difference: ventilation that overlaps GREIT's, hardly any opposite-signed part. (At 450
    iterations CC 0.37 with GREIT, whose own CC with Tikhonov is 0.62 on this slice.)"""
    rec, model = neonate
    from worker.bench.realdata import REAL_OPTIONS, breath_tidal, tidal_of
    from worker.recon.base import create, reconstruct_recording

    volumes, _ = reconstruct_recording(create("greit", model), rec.voltages, rec.reference)
    curve = -volumes[:, model.mask].sum(axis=1)
    starts, ends = [int(np.argmin(curve))], [int(np.argmax(curve))]
    greit = tidal_of(volumes, model, starts, ends)
    image, cost = breath_tidal("d2ip", model, rec, starts, ends,
                               {**REAL_OPTIONS, "iterations": [150, 150, 100]})
    assert cost["iterations"] == [150] and cost["first_image_s"] > 0
    inside = model.mask
    assert cc(image[inside], greit[inside]) > 0.25  # 0.36 measured
    assert image_checks(image, model)["opposite_vs_ventilation"] < 0.2  # 0.09 measured
