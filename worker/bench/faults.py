"""Fault bench (issue 19 §4): simulations with real-belt faults, each method with and without
the fault handling, scored against the truth.

Scenarios (`SCENARIOS`): the same tidal breathing (`tidal-breathing`, `duration` s at 20
frames/s, heart pulsing) simulated on the belt's own geometry and
- `none`: no fault (the baseline);
- `broken-1`, `broken-2`: electrode 4, and electrodes 4 and 11, lost contact
  (`worker.simulation.faults`);
- `belt-1cm`: the belt sits 1 cm higher than the model assumes (the geometry spec has no
  per-electrode offset, so the ring height is the 1 cm displacement);
- `wider-10`: the thorax is 10 % wider than the model (electrodes follow its outline);
- `drift`: electrode 7's contact drifts (its channels' gain ramps by 5 % over the recording).
The simulation takes its own geometry dict; the model is always the belt's nominal one. The
electrode faults are applied to the fault-free scenario's voltages (one simulation for three
scenarios), its reference treated as measured before the fault (broken: its own noise; drift:
none yet). The
phantom scales with the domain, so truth and images are compared voxel by voxel on the same
(P, R, C) grid: for the wider thorax that is the anatomy normalised to the body's outline.

Handling (`HANDLINGS`), through the operator's data weights (`worker.recon.weighting`):
- `none`: the model's default weights;
- `exclude`: the electrodes the quality report flags on the recording itself
  (`worker.devices.quality`, its drift check included) are excluded;
- `exclude+noise`: the same, and each channel weighted by its noise estimated from the frames.

Methods get their options from `options` (method name -> options; D2IP: its real-data
defaults, `REAL_OPTIONS`, since the faults are those of real belts).

Scores: MSSIM, ERR and CC (`worker.metrics`), means over `frames` frames taken evenly from
those whose truth is at least half the largest (ERR is meaningless near end-expiration, where
the truth vanishes); noise weights are estimated from all frames.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from service.contract.geometry import resolve_geometry
from service.contract.protocol import resolve_protocol
from worker import storage
from worker.bench.realdata import REAL_OPTIONS
from worker.devices.quality import quality_report
from worker.forward import load_model
from worker.forward.model import ForwardModel
from worker.metrics import score
from worker.recon.base import create, reconstruct_recording
from worker.recon.weighting import DataWeighting, weighted_model
from worker.recording import Recording, cached_simulation
from worker.simulation import simulate
from worker.simulation.faults import ElectrodeFault, apply_faults

SCENARIOS = ("none", "broken-1", "broken-2", "belt-1cm", "wider-10", "drift")
HANDLINGS = ("none", "exclude", "exclude+noise")
BELT_SHIFT_M = 0.01
WIDER = 1.10
KEY_LENGTH = 16
OPTIONS: dict[str, dict[str, Any]] = {"d2ip": REAL_OPTIONS}  # per method


@dataclass(frozen=True)
class FaultSetup:
    """The belt, model and simulation shared by every scenario."""

    geometry: Any = "thorax-1x16"
    mesh_size: float = 0.016
    protocol: Any = "adjacent"
    grid: tuple[int, int, int] = (12, 24, 24)
    duration: float = 10.0
    frames: int = 12  # frames scored per scenario
    snr_db: float = 50.0
    seed: int = 0

    @property
    def model_geometry(self) -> dict[str, Any]:
        base = resolve_geometry(self.geometry).model_dump(mode="json")
        return {**base, "mesh_size": self.mesh_size}


def scenario_geometry(setup: FaultSetup, scenario: str) -> dict[str, Any]:
    """The simulation's geometry dict for `scenario` (the model keeps `setup.model_geometry`)."""
    geometry = setup.model_geometry
    if scenario == "belt-1cm":
        rings = [z + BELT_SHIFT_M for z in geometry["electrodes"]["ring_heights"]]
        return {**geometry, "electrodes": {**geometry["electrodes"], "ring_heights": rings}}
    if scenario == "wider-10":
        return {**geometry, "domain": {**geometry["domain"],
                                       "width": geometry["domain"]["width"] * WIDER}}
    return geometry


def scenario_faults(scenario: str) -> list[ElectrodeFault]:
    return {"broken-1": [ElectrodeFault(3)],
            "broken-2": [ElectrodeFault(3), ElectrodeFault(10)],
            "drift": [ElectrodeFault(6, "drift")]}.get(scenario, [])


def simulated(setup: FaultSetup, scenario: str, progress: bool = False) -> Recording:
    """The scenario's recording: the geometry scenarios simulated (or from the simulation
    cache); the electrode faults applied to the fault-free recording, its reference counted
    as measured separately at the start (`worker.simulation.faults`)."""
    faults = scenario_faults(scenario)
    if faults:
        base = simulated(setup, "none", progress)
        geometry = resolve_geometry(setup.model_geometry)
        protocol = resolve_protocol(setup.protocol).build(geometry.electrodes.count)
        voltages, reference = apply_faults(base.voltages, base.reference, base.frame_times,
                                           protocol, faults,
                                           np.random.default_rng(setup.seed + 1))
        return Recording(voltages=voltages, reference=reference, frame_times=base.frame_times,
                         mask=base.mask, truth=base.truth,
                         meta={**base.meta, "faults": [asdict(f) for f in faults]})
    geometry = scenario_geometry(setup, scenario)
    key = storage.content_key({"bench": "faults", "geometry": geometry,
                               "protocol": setup.protocol, "grid": list(setup.grid),
                               "duration": setup.duration, "snr_db": setup.snr_db,
                               "seed": setup.seed, "faults": [asdict(f) for f in faults]},
                              KEY_LENGTH)

    def build() -> Recording:
        return simulate("tidal-breathing", snr_db=setup.snr_db, duration=setup.duration,
                        seed=setup.seed, geometry=geometry, protocol=setup.protocol,
                        grid=list(setup.grid), progress=progress)

    return cached_simulation(f"faults-{scenario}-{key}", build)


def scored_frames(truth: np.ndarray, mask: np.ndarray, count: int) -> np.ndarray:
    """`count` frame indices, evenly spread over those whose truth norm is at least half the
    largest."""
    norms = np.linalg.norm(truth[:, mask], axis=1)
    strong = np.flatnonzero(norms >= 0.5 * norms.max())
    return strong[np.linspace(0, len(strong) - 1, min(count, len(strong))).round().astype(int)]


def flagged_electrodes(model: ForwardModel, rec: Recording) -> tuple[int, ...]:
    """The electrodes (0-based) the quality report flags on the recording's frames (its drift
    check included)."""
    protocol = model.protocol
    report = quality_report(rec.voltages, protocol.currents, protocol.meas_injection,
                            protocol.meas_weights, frame_times=rec.frame_times)
    return tuple(report.flagged)


def run_scenario(setup: FaultSetup, scenario: str, methods: list[str], model: ForwardModel,
                 device: str = "cpu", progress: bool = False,
                 options: dict[str, dict[str, Any]] | None = None,
                 handlings: tuple[str, ...] = HANDLINGS) -> list[dict[str, Any]]:
    """Every method under every handling on one scenario: one row each."""
    rec = simulated(setup, scenario, progress)
    chosen = scored_frames(rec.truth, rec.mask, setup.frames)
    flagged = flagged_electrodes(model, rec)
    rows = []
    for handling in handlings:
        weighting = DataWeighting(exclude=flagged if handling != "none" else (),
                                  noise="data" if handling == "exclude+noise" else "model")
        variant = weighted_model(model, weighting, rec.voltages, rec.reference)
        for name in methods:
            recon = create(name, variant, device=device,
                           **(OPTIONS if options is None else options).get(name, {}))
            t0 = time.perf_counter()
            volumes, _ = reconstruct_recording(recon, rec.voltages[chosen], rec.reference,
                                               progress=progress)
            metrics = score(volumes, rec.truth[chosen], rec.mask)["mean"]
            rows.append({"scenario": scenario, "method": name, "handling": handling,
                         "flagged": [e + 1 for e in flagged],
                         "mssim": metrics["mssim"], "err": metrics["err"], "cc": metrics["cc"],
                         "seconds": time.perf_counter() - t0})
    return rows


def benchmark(methods: list[str], scenarios: list[str], setup: FaultSetup, out_dir: Path,
              device: str = "cpu", progress: bool = False,
              options: dict[str, dict[str, Any]] | None = None,
              handlings: tuple[str, ...] = HANDLINGS) -> dict[str, Any]:
    """Run the scenarios, write faults.json and faults.md into `out_dir`, return the report."""
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model = load_model(setup.model_geometry, setup.protocol, list(setup.grid), progress=progress)
    rows = []
    for scenario in scenarios:
        rows += run_scenario(setup, scenario, methods, model, device, progress, options,
                             handlings)
    report = {"date": time.strftime("%Y-%m-%d", time.gmtime()), "setup": asdict(setup),
              "methods": methods, "scenarios": scenarios, "handlings": list(handlings),
              "device": device,
              "options": {m: o for m, o in (OPTIONS if options is None else options).items()
                          if m in methods},
              "seconds": round(time.perf_counter() - t0, 1), "rows": rows}
    (out_dir / "faults.json").write_text(json.dumps(report, indent=2))
    (out_dir / "faults.md").write_text(markdown(report))
    return report


def markdown(report: dict[str, Any]) -> str:
    """faults.md: one row per scenario and method, MSSIM / ERR per handling."""
    setup = report["setup"]
    handlings = report.get("handlings", HANDLINGS)
    lines = [f"# Fault bench ({report['date']})", "",
             f"`tidal-breathing`, {setup['duration']:g} s at {setup['snr_db']:g} dB, seed "
             f"{setup['seed']}, simulated on the scenario's geometry; model "
             f"{setup['geometry']} (mesh {setup['mesh_size']} m), protocol {setup['protocol']}, "
             f"grid {'x'.join(map(str, setup['grid']))}; means over {setup['frames']} frames "
             f"near end-inspiration; {report['seconds']:.0f} s in all.", "",
             "| scenario | method | flagged | " + " | ".join(
                 f"MSSIM {h} | ERR {h}" for h in handlings) + " |",
             "|" + "---|" * (3 + 2 * len(handlings))]
    by_key = {(r["scenario"], r["method"], r["handling"]): r for r in report["rows"]}
    for scenario in report["scenarios"]:
        for method in report["methods"]:
            cells = []
            flagged = ""
            for handling in handlings:
                row = by_key[(scenario, method, handling)]
                flagged = ", ".join(map(str, row["flagged"])) or "none"
                cells += [f"{row['mssim']:.3f}", f"{row['err']:.3f}"]
            lines.append(f"| {scenario} | {method} | {flagged} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
