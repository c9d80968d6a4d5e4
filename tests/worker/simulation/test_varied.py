"""Varied thoraxes for pretraining: seeded draws, every pathology as documented."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from service.contract.geometry import resolve_geometry
from worker.simulation.phantom import BreathState
from worker.simulation.varied import (
    EFFUSION_SIGMA,
    PATHOLOGIES,
    PNEUMOTHORAX_SIGMA,
    VARIATION,
    Pathology,
    random_thorax,
)

GEOMETRY = resolve_geometry(None)


def _points(n: int = 40_000, seed: int = 0) -> np.ndarray:
    dom = GEOMETRY.domain
    rng = np.random.default_rng(seed)
    return rng.uniform([-dom.width / 2, -dom.depth / 2, 0.0],
                       [dom.width / 2, dom.depth / 2, dom.height], (n, 3))


def test_draws_are_seeded_and_vary() -> None:
    a = random_thorax(GEOMETRY, np.random.default_rng(5))
    b = random_thorax(GEOMETRY, np.random.default_rng(5))
    c = random_thorax(GEOMETRY, np.random.default_rng(6))
    assert np.array_equal(a.phantom.right.centre, b.phantom.right.centre)
    assert a.phantom.pathology == b.phantom.pathology and a.frame == b.frame
    assert not np.array_equal(a.phantom.right.semi_axes, c.phantom.right.semi_axes)
    kinds = {random_thorax(GEOMETRY, np.random.default_rng(i)).phantom.pathology.kind
             for i in range(150)}
    assert kinds == set(PATHOLOGIES)


def test_breath_states_lie_in_the_documented_ranges() -> None:
    for i in range(50):
        case = random_thorax(GEOMETRY, np.random.default_rng(i))
        lo, hi = VARIATION["reference_volume"]
        assert lo <= case.reference.volume <= hi
        assert 0.45 <= case.frame.volume <= 1.0
        if case.frame.volume > case.reference.volume:
            assert case.frame.lung_sigma < case.reference.lung_sigma  # air lowers it


@pytest.mark.parametrize("kind", ["one-sided", "dorsal", "effusion", "pneumothorax",
                                  "atelectasis"])
def test_each_pathology_changes_the_lungs(kind: str) -> None:
    base = random_thorax(GEOMETRY, np.random.default_rng(1))
    healthy = dataclasses.replace(base.phantom, pathology=Pathology("none"))
    sick = dataclasses.replace(base.phantom, pathology=Pathology(kind, 0, 0.5))
    pts = _points()
    frame = BreathState(0.95, 0.08, base.frame.heart_sigma)
    h, s = healthy.conductivity(pts, frame), sick.conductivity(pts, frame)
    changed = h != s
    assert changed.any()
    right = pts[:, 0] < 0
    assert changed[right].sum() > 10 * changed[~right].sum()  # side 0: the patient's right
    if kind == "effusion":
        assert set(np.unique(s[changed])) == {EFFUSION_SIGMA}
    if kind == "pneumothorax":
        assert set(np.unique(s[changed])) == {PNEUMOTHORAX_SIGMA}
    if kind == "one-sided":  # the right lung keeps the reference state
        ref = healthy.conductivity(pts, base.reference)
        lung = right & (ref == base.reference.lung_sigma)
        assert lung.sum() > 100
        np.testing.assert_array_equal(s[lung], ref[lung])
