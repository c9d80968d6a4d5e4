"""Belt profiles: the electrode belts in clinical use and ours, as presets a session names.

A belt fixes what the device measures: electrodes per ring and rings, the electrodes' size, the
protocol (channel order and current sign, as the device's data arrive) and the frame rate. The
thorax it is worn on is the patient's (`service.contract.patient`), so a profile builds the
electrode part of a `GeometrySpec` and leaves the domain to the caller.

Sources (docs/forward-model.md "Belt profiles" says which fields were checked and how):
- Göttingen Goe-MF II (Viasys / CareFusion): 16 electrodes, adjacent drive and measurement,
  no measurement on a driven electrode, channel order and current sign of EIDORS's reader
  (`eidors_readdata.m`, formats GET/MCEIT); 13 frames/s: checked on the two real `.get` files
  of `../shared/realdata` (their `.prl` sidecars, docs/real-data.md).
- Dräger PulmoVista 500: 16 electrodes, adjacent drive; 10-50 images/s (20 the nominal here);
  the channel layout as EIDORS reads Dräger files (208 channels, adjacent). Not checked
  against a file (none here).
- Sentec LuMon (formerly Swisstom BB2): 32 electrodes in one textile ring, skip-4 drive and
  measurement (EIDORS's [0, 5]), 50 frames/s; without the measurements next to the drive
  (`no_meas_current_next1`, M = 736), the protocol that matched a real 32-electrode human
  recording at r = +0.93 (issue 19). Not checked against a file here.
- Timpel Enlight 1800: 32 electrodes, one ring, 50 frames/s, drive through electrode pairs
  with three electrodes between them (skip 3). Not checked against a file.
- eitmon research belt: 2 rings of 16, square numbering, skip-4 drive and measurement
  (Grychtol et al. 2019, Physiol. Meas. 40 074006); 20 frames/s as our simulations.
Electrode sizes are nominal values of ours (the manufacturers do not publish them in a form we
could check): they set the complete electrode model's patch, and `patient_geometry` narrows
them on small thoraxes so that neighbours never touch.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt

from service.contract.geometry import Numbering

BeltName = Literal["goettingen-16", "draeger-16", "sentec-32", "timpel-32", "eitmon-2x16"]


class BeltProfile(BaseModel):
    """One belt: what the device measures (see the module doc for the sources)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: BeltName
    device: str = Field(description="the devices that use this belt")
    per_ring: PositiveInt
    rings: Literal[1, 2] = 1
    ring_gap: PositiveFloat = Field(0.06, description="centre-to-centre distance of two rings, m")
    electrode_width: PositiveFloat = Field(description="along the boundary, m (nominal)")
    electrode_height: PositiveFloat = Field(description="along z, m (nominal)")
    numbering: Numbering = "square"
    protocol: str | dict[str, Any] = Field(description="protocol preset name or spec")
    frame_rate: PositiveFloat = Field(description="frames per second, nominal")
    source: str = Field(description="where the figures come from")
    checked: bool = Field(False, description="protocol and frame rate checked on a real file")

    @property
    def count(self) -> int:
        return self.per_ring * self.rings

    def electrodes(self, height: float, size: float = 1.0,
                   max_width: float = float("inf")) -> dict[str, Any]:
        """The `electrodes` part of a geometry spec on a slab of `height` m, the ring(s)
        centred; `size` (<= 1) scales the electrodes and the ring gap (the belt's smaller
        size), `max_width` caps the electrode width."""
        mid, gap = height / 2, self.ring_gap * size
        rings = (mid,) if self.rings == 1 else (mid - gap / 2, mid + gap / 2)
        return {"per_ring": self.per_ring, "ring_heights": rings,
                "width": min(self.electrode_width * size, max_width),
                "height": self.electrode_height * size, "numbering": self.numbering}


BELTS: dict[str, BeltProfile] = {b.name: b for b in (  # keyed in BeltName's order
    BeltProfile(name="goettingen-16", device="Göttingen Goe-MF II (Viasys / CareFusion)",
                per_ring=16, electrode_width=0.02, electrode_height=0.02,
                protocol="eidors-adjacent", frame_rate=13.0, checked=True,
                source="EIDORS eidors_readdata.m (GET); the two real .get files and their .prl"),
    BeltProfile(name="draeger-16", device="Dräger PulmoVista 500", per_ring=16,
                electrode_width=0.02, electrode_height=0.04, protocol="eidors-adjacent",
                frame_rate=20.0,
                source="adjacent drive, 10-50 images/s (Frerichs et al., Thorax 2017, TREND "
                       "consensus); channel layout as EIDORS reads Dräger files"),
    BeltProfile(name="sentec-32", device="Sentec LuMon, Swisstom BB2", per_ring=32,
                electrode_width=0.01, electrode_height=0.04, protocol="eidors-skip4-next1",
                frame_rate=50.0,
                source="32 electrodes, skip 4 (EIDORS [0, 5]), 50 frames/s (TREND consensus); "
                       "no_meas_current_next1 as in the issue 19 recording (r = +0.93)"),
    BeltProfile(name="timpel-32", device="Timpel Enlight 1800", per_ring=32,
                electrode_width=0.01, electrode_height=0.03, protocol="skip3", frame_rate=50.0,
                source="32 electrodes, pairs with 3 electrodes between (skip 3), 50 frames/s "
                       "(TREND consensus); current sign not known (the model check catches "
                       "a flip)"),
    BeltProfile(name="eitmon-2x16", device="eitmon research belt", per_ring=16, rings=2,
                electrode_width=0.02, electrode_height=0.02, protocol="skip4",
                frame_rate=20.0,
                source="Grychtol et al. 2019 (Physiol. Meas. 40 074006): 2 planes, square "
                       "numbering, skip 4; the default thorax-2x16 geometry"),
)}
DEFAULT_BELT = "eitmon-2x16"


def resolve_belt(name: str | None) -> BeltProfile:
    """The profile of a belt name (None: the default)."""
    name = DEFAULT_BELT if name is None else name
    if name not in BELTS:
        raise ValueError(f"belt: unknown belt {name!r}; belts: {', '.join(BELTS)}")
    return BELTS[name]
