"""Slice pictures: exact pixel size, one shared colour scale, radiological orientation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from worker.plot import axial_planes, image_rows, plot_volumes


@pytest.mark.parametrize("size", [(1600, 900), (641, 359)])
def test_png_has_requested_size(tmp_path: Path, truth: np.ndarray, mask: np.ndarray,
                                size: tuple[int, int]) -> None:
    out = tmp_path / "fig.png"
    plot_volumes([("truth", truth[2]), ("tikhonov", 0.5 * truth[2])], mask, out, size_px=size,
                 frame_label="frame 2")
    assert out.stat().st_size > 0
    assert imread(out).shape[:2] == (size[1], size[0])


def test_axial_planes_evenly_spaced() -> None:
    assert axial_planes(16) == [2, 6, 10, 14]
    assert axial_planes(8) == [1, 3, 5, 7]
    assert axial_planes(3) == [0, 1, 2]


def test_shared_symmetric_colour_scale(tmp_path: Path, truth: np.ndarray,
                                      mask: np.ndarray) -> None:
    recon = -3 * truth[2]
    fig = plot_volumes([("truth", truth[2]), ("tikhonov", recon)], mask, tmp_path / "f.png",
                       size_px=(800, 500))
    images = [im for ax in fig.axes for im in ax.images]
    assert len(images) == 2 * 5  # two rows of four axial slices and one coronal slice
    limit = float(np.abs(recon[mask]).max())
    for im in images:
        assert im.norm.vmin == pytest.approx(-limit) and im.norm.vmax == pytest.approx(limit)
        assert im.get_cmap().name.startswith("RdBu_r")
    colorbars = [ax for ax in fig.axes if ax.get_ylabel() == "Δσ/σ0"]
    assert len(colorbars) == 1


def test_slices_orientation_and_mask(tmp_path: Path, truth: np.ndarray,
                                     mask: np.ndarray) -> None:
    vol = truth[1]
    fig = plot_volumes([("truth", vol)], mask, tmp_path / "f.png", size_px=(800, 300))
    image_axes = [ax for ax in fig.axes if ax.images]
    for ax, plane in zip(image_axes[:4], axial_planes(vol.shape[0]), strict=True):
        im = ax.images[0]
        assert im.origin == "upper"  # row 0 (anterior) at the top, column 0 on the left
        np.testing.assert_array_equal(im.get_array().mask, ~mask[plane])
        np.testing.assert_array_equal(im.get_array().filled(0), np.where(mask[plane], vol[plane],
                                                                         0))
        assert f"plane {plane}" in ax.get_title()
    coronal = image_axes[4].images[0]
    assert coronal.origin == "lower"  # plane 0 at the bottom: cranial up
    mid = vol.shape[1] // 2
    np.testing.assert_array_equal(coronal.get_array().filled(0),
                                  np.where(mask[:, mid], vol[:, mid], 0))
    assert "coronal" in image_axes[4].get_title()
    assert "truth" in image_axes[0].get_ylabel()


def _pixel(png: np.ndarray, fig_height: int, ax, fx: float, fy_from_top: float) -> np.ndarray:
    """The RGB of the saved PNG at a fractional position inside an axes' box."""
    box = ax.get_window_extent()
    x = box.x0 + fx * box.width
    y = box.y1 - fy_from_top * box.height  # display y runs upwards from the bottom
    return png[int(fig_height - y), int(x), :3]


def test_rendered_orientation(tmp_path: Path) -> None:
    """An anterior-right, cranial blob lands top-left in the axial and the coronal slices."""
    shape = (8, 8, 8)
    vol = np.zeros(shape)
    vol[4:, :5, :4] = 1.0  # cranial half, anterior rows (incl. the middle one), right columns
    mask = np.ones(shape, dtype=bool)
    mask[:, -1, -1] = False
    out = tmp_path / "f.png"
    fig = plot_volumes([("truth", vol)], mask, out, size_px=(1000, 300))
    png = imread(out)
    axial, coronal = fig.axes[3], fig.axes[4]  # plane 7 (top) and the coronal slice
    red = _pixel(png, 300, axial, 0.25, 0.25)
    white = _pixel(png, 300, axial, 0.6, 0.6)
    grey = _pixel(png, 300, axial, 0.97, 0.97)  # the outside-mask corner voxel
    assert red[0] > red[2] + 0.2 and red[1] < 0.1  # the dark red end of RdBu_r
    assert white.min() > 0.9
    assert np.ptp(grey) < 0.02 and 0.7 < grey[0] < 0.9
    assert np.array_equal(_pixel(png, 300, coronal, 0.25, 0.25), red)
    assert _pixel(png, 300, coronal, 0.25, 0.75).min() > 0.9  # caudal half: no change


def test_shape_mismatch_rejected(tmp_path: Path, truth: np.ndarray, mask: np.ndarray) -> None:
    with pytest.raises(ValueError, match="tikhonov"):
        plot_volumes([("truth", truth[0]), ("tikhonov", truth[0][:-1])], mask,
                     tmp_path / "f.png")
    with pytest.raises(ValueError, match="no panels"):
        plot_volumes([], mask, tmp_path / "f.png")


def test_image_rows_one_row_per_label(tmp_path: Path) -> None:
    path = tmp_path / "rows.png"
    image_rows([("a", np.zeros((5, 1, 8, 8))), ("b", np.ones((3, 1, 8, 8)))], path)
    height, width = imread(path).shape[:2]
    assert (height, width) == (180, 400)  # 2 rows x 0.9 in, 5 columns x 0.8 in, at 100 dpi
