"""The prior's training images (seed 2, section 4.2): seeded, normalised, all four kinds."""

from __future__ import annotations

import numpy as np
import pytest

from worker.recon.diffinr.shapes import KINDS, ShapeSpec, _outline, shape_images


def test_seeded_and_normalised() -> None:
    a, b, c = shape_images(50, seed=3), shape_images(50, seed=3), shape_images(50, seed=4)
    assert a.shape == (50, 1, 32, 32) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.allclose(a.min(axis=(1, 2, 3)), -1) and np.allclose(a.max(axis=(1, 2, 3)), 1)


def test_shapes_more_and_less_conductive_than_background() -> None:
    """The background (the most common value) is the minimum in some images, the maximum in
    others and in between in others: shapes are both more and less conductive."""
    images = shape_images(200, seed=0)[:, 0]
    levels = [np.round((im.ravel() + 1) * 50).astype(int) for im in images]
    backgrounds = np.array([np.bincount(lv).argmax() / 50 - 1 for lv in levels])
    assert (backgrounds < -0.99).any() and (backgrounds > 0.99).any()
    assert ((backgrounds > -0.99) & (backgrounds < 0.99)).any()


def test_overlapping_shapes_make_several_levels() -> None:
    """With 3-4 shapes per image the images hold more than two plateaus (overlaps, own values)."""
    images = shape_images(20, seed=1, spec=ShapeSpec(objects=(3, 4), supersample=1))[:, 0]
    levels = [len(np.unique(im)) for im in images]
    assert np.median(levels) >= 3


def test_supersampling_gives_partial_edge_pixels() -> None:
    sharp = shape_images(10, seed=2, spec=ShapeSpec(supersample=1))
    soft = shape_images(10, seed=2, spec=ShapeSpec(supersample=2))
    assert max(len(np.unique(im)) for im in soft) > max(len(np.unique(im)) for im in sharp)


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "circle"])
def test_outlines_stay_within_their_radius(kind: str) -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        xy = _outline(kind, rng, radius=10.0)
        assert np.linalg.norm(xy, axis=1).max() <= 10.0 * np.sqrt(2) + 1e-9
        assert len(xy) >= 3


def test_bezier_outline_is_a_smooth_curve() -> None:
    """The flattened Bézier curve has many more vertices than its 3-6 anchors."""
    xy = _outline("bezier", np.random.default_rng(1), radius=10.0)
    assert len(xy) > 20

