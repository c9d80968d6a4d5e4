"""Regional parameters on constructed tidal images whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from worker.ventilation.regional import regional, ventilation_delay

from .conftest import SHAPE


def test_all_ventilation_on_the_left(body, space) -> None:
    tidal = np.zeros(SHAPE)
    tidal[:, :, 6:] = 1.0  # columns 6-11: x > 0, the patient's left
    reg = regional(tidal, body, space)
    assert reg.left_pct == pytest.approx(100.0) and reg.right_pct == pytest.approx(0.0)
    assert reg.quadrant_pct["ventral_left"] == pytest.approx(50.0)
    assert reg.quadrant_pct["dorsal_left"] == pytest.approx(50.0)
    assert reg.cov_x_pct == pytest.approx(75.0)  # centre of the left half
    assert reg.cov_y_pct == pytest.approx(50.0) and reg.cov_z_pct == pytest.approx(50.0)
    assert reg.silent_pct == pytest.approx(50.0)  # the right half of the lung region


def test_uniform_ventilation(body, space) -> None:
    reg = regional(np.ones(SHAPE), body, space, ring_z=(0.03, 0.09))
    assert reg.gi == pytest.approx(0.0)
    assert reg.layer_pct == pytest.approx((25.0, 25.0, 25.0, 25.0))
    assert reg.caudal_pct == pytest.approx(50.0) and reg.cranial_pct == pytest.approx(50.0)
    assert reg.plane_pct == pytest.approx((100 / 6,) * 6)
    assert [ring.plane for ring in reg.ring_planes] == [1, 4]
    assert reg.ring_planes[0].pct == pytest.approx(100 / 6)
    assert reg.ring_planes[0].left_pct == pytest.approx(50.0)
    assert reg.silent_pct == 0.0
    scalars = reg.scalars()
    assert scalars["ventral_pct"] == pytest.approx(50.0)
    assert scalars["ventral_pct"] + scalars["dorsal_pct"] == pytest.approx(100.0)
    assert scalars["gi"] == reg.gi and scalars["cov_z_pct"] == reg.cov_z_pct


def test_a_shifted_blob_moves_the_centre_of_ventilation(body, space) -> None:
    def blob(p: int, r: int, c: int) -> np.ndarray:
        tidal = np.zeros(SHAPE)
        tidal[p, r, c] = 1.0
        tidal[0, 0, 0] = tidal[-1, -1, -1] = 1e-6  # fix the lung's extent to the grid
        return tidal

    first = regional(blob(1, 1, 3), body, space)
    moved = regional(blob(4, 8, 9), body, space)
    # one voxel of the 12 columns is 100/12 %, of the 10 rows 10 %, of the 6 planes 100/6 %
    assert moved.cov_x_pct - first.cov_x_pct == pytest.approx(6 * 100 / 12, abs=0.01)
    assert moved.cov_y_pct - first.cov_y_pct == pytest.approx(7 * 10.0, abs=0.01)
    assert moved.cov_z_pct - first.cov_z_pct == pytest.approx(3 * 100 / 6, abs=0.01)
    assert first.layer_pct[0] > 99 and moved.layer_pct[3] > 99  # layers of 2.5 rows
    assert first.caudal_pct > 99 and moved.cranial_pct > 99


def test_gi_of_a_two_level_image(body, space) -> None:
    tidal = np.ones(SHAPE)
    tidal[:3] = 3.0  # half the voxels at 3, half at 1: median 2
    reg = regional(tidal, body, space)
    assert reg.gi == pytest.approx(tidal.size * 1.0 / tidal.sum())


@pytest.mark.parametrize(("position", "dependent"), [("supine", True), ("prone", False)])
def test_silent_spaces_follow_gravity(body, space, position: str, dependent: bool) -> None:
    """Dorsal rows 8-9 do not ventilate: dependent when supine, non-dependent when prone."""
    tidal = np.ones(SHAPE)
    tidal[:, 8:, :] = 0.05
    reg = regional(tidal, body, space, position=position)
    assert reg.silent_pct == pytest.approx(20.0)
    assert reg.silent_dependent_pct == pytest.approx(20.0 if dependent else 0.0)
    assert reg.silent_nondependent_pct == pytest.approx(0.0 if dependent else 20.0)
    with pytest.raises(ValueError, match="position"):
        regional(tidal, body, space, position="standing on hands")


@pytest.mark.parametrize(("position", "dependent", "cov"), [
    ("supine", 0.0, 25.0), ("prone", 100.0, 75.0),  # ventral rows 0-4 ventilate
])
def test_dependent_share_and_centre_follow_gravity(body, space, position: str,
                                                   dependent: float, cov: float) -> None:
    """Only the ventral half ventilates: non-dependent supine, dependent prone; the centre of
    ventilation along gravity mirrors; lateral positions read the left-right axis."""
    tidal = np.full(SHAPE, 1e-9)  # the lung's extent stays the grid
    tidal[:, :5, :] = 1.0
    reg = regional(tidal, body, space, position=position)
    assert reg.dependent_pct == pytest.approx(dependent, abs=1e-3)
    assert reg.nondependent_pct == pytest.approx(100.0 - dependent, abs=1e-3)
    assert reg.cov_gravity_pct == pytest.approx(cov, abs=1e-3)
    assert reg.scalars()["dependent_pct"] == reg.dependent_pct
    left = np.full(SHAPE, 1e-9)
    left[:, :, 6:] = 1.0  # the patient's left half
    on_left = regional(left, body, space, position="left-lateral")
    on_right = regional(left, body, space, position="right-lateral")
    assert on_left.dependent_pct == pytest.approx(100.0, abs=1e-3)
    assert on_right.dependent_pct == pytest.approx(0.0, abs=1e-3)
    assert on_left.cov_gravity_pct == pytest.approx(100.0 - on_right.cov_gravity_pct)


def test_negative_tidal_change_counts_as_none(body, space) -> None:
    tidal = np.zeros(SHAPE)
    tidal[:, :, 6:] = 1.0
    tidal[:, :, :6] = -0.5
    assert regional(tidal, body, space).left_pct == pytest.approx(100.0)


def test_ventilation_delay() -> None:
    """Voxel 0 rises linearly from the start, voxel 1 starts after half the inspiration, voxel
    2 never rises."""
    times = np.linspace(0.0, 2.0, 21)
    linear = times / 2.0
    late = np.clip(times - 1.0, 0.0, None)
    inspiration = np.column_stack([linear, late, np.zeros_like(times)])
    delay = ventilation_delay(inspiration, times)
    assert delay[0] == pytest.approx(40.0)
    assert delay[1] == pytest.approx(50.0 + 0.4 * 50.0)
    assert np.isnan(delay[2])


def test_every_position_the_api_accepts_has_a_gravity() -> None:
    from typing import get_args

    from service.contract.patient import Position
    from worker.ventilation.regional import GRAVITY

    assert set(get_args(Position)) <= set(GRAVITY)
