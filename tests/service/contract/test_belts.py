"""Belt profiles: each builds a valid geometry and a protocol with the documented count."""

from __future__ import annotations

import pytest

from service.contract.belts import BELTS, DEFAULT_BELT, resolve_belt
from service.contract.geometry import resolve_geometry
from service.contract.patient import PatientSpec, patient_geometry
from service.contract.protocol import resolve_protocol

# (electrodes, rings, measurements per frame) as the module doc states them
EXPECTED = {"goettingen-16": (16, 1, 208), "draeger-16": (16, 1, 208),
            "sentec-32": (32, 1, 736), "timpel-32": (32, 1, 928),
            "eitmon-2x16": (32, 2, 928)}


@pytest.mark.parametrize("name", list(BELTS))
def test_belt_counts_and_geometry(name: str) -> None:
    belt = resolve_belt(name)
    count, rings, m = EXPECTED[name]
    assert (belt.count, belt.rings) == (count, rings)
    geometry = patient_geometry(PatientSpec(), belt)
    assert geometry.electrodes.count == count and geometry.electrodes.n_rings == rings
    assert resolve_protocol(belt.protocol).build(count).n_measurements == m
    assert 10 <= belt.frame_rate <= 50 and belt.source


def test_default_belt_on_the_default_patient_is_the_default_geometry() -> None:
    assert patient_geometry(PatientSpec(), resolve_belt(None)) == resolve_geometry(None)
    assert DEFAULT_BELT == "eitmon-2x16"


def test_goettingen_belt_protocol_is_the_one_its_files_carry() -> None:
    """The real .get files' protocol (worker.devices.goettingen) is the belt's, channel by
    channel: EIDORS's adjacent pattern, currents -1 on e."""
    from service.contract.stim_patterns import mk_stim_patterns

    file_protocol = resolve_protocol(mk_stim_patterns(16, 1, [0, 1], [0, 1],
                                                      ["no_meas_current", "no_rotate_meas"]))
    belt = resolve_protocol(BELTS["goettingen-16"].protocol).build(16)
    built = file_protocol.build(16)
    assert (belt.currents == built.currents).all()
    assert (belt.meas_weights == built.meas_weights).all()
    assert belt.currents[0, 0] == -1.0


def test_unknown_belt_is_refused() -> None:
    with pytest.raises(ValueError, match="belts: goettingen-16"):
        resolve_belt("nope")


def test_belt_names_are_the_literal() -> None:
    from typing import get_args

    from service.contract.belts import BeltName

    assert tuple(BELTS) == get_args(BeltName)
