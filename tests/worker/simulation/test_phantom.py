from __future__ import annotations

import numpy as np
import pytest

from service.contract.geometry import resolve_geometry
from worker.simulation.cases import timeline
from worker.simulation.phantom import BreathState, thorax_phantom


def _lung_volume(phantom, state: BreathState, step: float = 0.002) -> tuple[float, float]:
    axes = [np.arange(-0.16, 0.16, step), np.arange(-0.11, 0.11, step), np.arange(0, 0.2, step)]
    xx, yy, zz = np.meshgrid(*axes, indexing="ij")
    pts = np.column_stack([xx.ravel(), yy.ravel(), zz.ravel()])
    right, left = phantom.lungs(pts, state)
    return right.sum() * step**3, left.sum() * step**3


def test_lung_volume_follows_the_requested_sinusoid() -> None:
    geo = resolve_geometry("thorax-2x16")
    phantom = thorax_phantom(geo)
    tl = timeline("healthy-deep-breath", geo.background_conductivity)
    full = _lung_volume(phantom, BreathState(1.0, 0.1, 0.24))
    for k in (0, 5, 10, 19):
        want = (2 / 3 + (1 - np.cos(np.pi * k / 19)) / 6)  # sinusoid from 2/3 to 1
        got = _lung_volume(phantom, tl.states[k])
        assert tl.states[k].volume == pytest.approx(want)
        for g, f in zip(got, full, strict=True):
            assert g / f == pytest.approx(want, rel=0.02)


def test_lungs_are_anatomical_not_boxes() -> None:
    geo = resolve_geometry("thorax-2x16")
    phantom = thorax_phantom(geo)
    state = BreathState(1.0, 0.1, 0.24)
    right, left = _lung_volume(phantom, state)
    assert right > left > 0.4 * right  # right lung larger (cardiac notch on the left)
    xs = np.linspace(-0.16, 0.16, 161)
    def width_at(z: float) -> float:
        pts = np.column_stack([xs, np.full_like(xs, 0.0), np.full_like(xs, z)])
        r, _ = phantom.lungs(pts, state)
        return r.sum() * (xs[1] - xs[0])
    assert width_at(0.05) > width_at(0.15) > width_at(0.185) > 0  # narrows towards the apex
    heart = phantom.heart(np.array([[0.016, -0.042, 0.06]]))
    assert heart[0]


def test_edema_region_keeps_background() -> None:
    geo = resolve_geometry("thorax-2x16")
    phantom = thorax_phantom(geo, edema=True)
    state = BreathState(0.8, 0.09, 0.24)
    left_dorsal = np.array([[0.075, 0.06, 0.06]])
    left_ventral = np.array([[0.075, -0.04, 0.06]])
    assert phantom.conductivity(left_dorsal, state)[0] == 0.24
    assert phantom.conductivity(left_ventral, state)[0] == 0.09
