"""Exports: volumes as NIfTI-1, parameters as JSON, CSV and a FHIR Observation bundle.

NIfTI: the array is written as (C, R, P[, T]) so that voxel axes i, j, k run along +x (patient
left), +y (posterior) and +z (cranial). NIfTI world coordinates are RAS+ in millimetres (+x
right, +y anterior, +z superior), so the affine negates LPS x and y:
x_RAS = -x_LPS, y_RAS = -y_LPS, z_RAS = z_LPS. 3D Slicer and ITK-SNAP then show the patient's
left on the screen's right in axial views (radiological), anterior at the top, cranial up.
qform and sform are both set (code 1, scanner), units mm and s.

FHIR (R4): one `Observation` per breath with a local code system (`CODE_SYSTEM`; LOINC has no
EIT codes), one component per parameter with a UCUM unit ("%", "/min", "1", "s"; TIV and EELI
carry "1", the arbitrary impedance unit being dimensionless); the breath times are components
in seconds from the recording's start, and an `effectivePeriod` when `start_time` (ISO 8601)
anchors them.
"""

from __future__ import annotations

import csv
import json
import math
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from worker.ventilation.parameters import SCALAR_FIELDS, Analysis
from worker.ventilation.space import VoxelSpace

CODE_SYSTEM = "urn:eitmon:ventilation"
_UCUM = {"rate_per_min": "/min", "gi": "1", "tiv": "1", "eeli": "1", "delta_eeli": "1",
         "duration_s": "s"}


def nifti_affine(space: VoxelSpace) -> np.ndarray:
    """4x4 voxel (i = column, j = row, k = plane) -> RAS+ millimetre affine."""
    dz, dy, dx = (1000.0 * s for s in space.spacing)
    z0, y0, x0 = (1000.0 * o for o in space.origin)
    return np.array([[-dx, 0.0, 0.0, -x0],
                     [0.0, -dy, 0.0, -y0],
                     [0.0, 0.0, dz, z0],
                     [0.0, 0.0, 0.0, 1.0]])


def save_nifti(path: str | Path, volumes: np.ndarray, space: VoxelSpace,
               frame_interval_s: float | None = None, description: str = "") -> None:
    """Write (P, R, C) or (T, P, R, C) float volumes to a .nii / .nii.gz file."""
    import nibabel as nib

    volumes = np.asarray(volumes, dtype=np.float32)
    if volumes.shape[-3:] != space.shape:
        raise ValueError(f"volumes {volumes.shape} do not match the space {space.shape}")
    data = np.moveaxis(volumes, (-3, -1), (-1, -3))  # (.., C, R, P)
    if data.ndim == 4:
        data = np.moveaxis(data, 0, -1)  # (C, R, P, T)
    affine = nifti_affine(space)
    image = nib.Nifti1Image(np.ascontiguousarray(data), affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm", "sec")
    if data.ndim == 4 and frame_interval_s:
        zooms = image.header.get_zooms()
        image.header.set_zooms((*zooms[:3], float(frame_interval_s)))
    if description:
        image.header["descrip"] = description[:79].encode()
    nib.save(image, str(path))


def export_nifti(folder: str | Path, analysis: Analysis, space: VoxelSpace,
                 volumes: np.ndarray | None = None) -> list[Path]:
    """Tidal images (4D, one per breath), their mean, the lung mask, the RVD images (0 where
    undefined: outside the lung, or no rise), and optionally the input volumes as -Δσ/σ0
    (4D); returns the written paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def save(name: str, data: np.ndarray, interval: float | None, text: str) -> None:
        path = folder / name
        save_nifti(path, data, space, interval, text)
        written.append(path)

    if analysis.breaths:
        save("tidal_images.nii.gz", analysis.tidal_images, None,
             "eitmon tidal image per breath, -dsigma/sigma0")
        save("tidal_mean.nii.gz", analysis.tidal_images.mean(axis=0), None,
             "eitmon mean tidal image, -dsigma/sigma0")
        save("rvd.nii.gz", np.nan_to_num(analysis.rvd_images, nan=0.0), None,
             "eitmon regional ventilation delay, % insp. time")
    save("lung_mask.nii.gz", analysis.lung_mask.astype(np.float32), None,
         "eitmon lung region")
    if volumes is not None:
        interval = float(np.median(np.diff(analysis.frame_times)))
        save("impedance.nii.gz", -np.asarray(volumes), interval,
             "eitmon impedance change -dsigma/sigma0")
    return written


def json_safe(value: Any) -> Any:
    """nan -> None (standard JSON), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def to_json(analysis: Analysis) -> str:
    """The `{"breaths": [...], "summary": {...}}` document."""
    return json.dumps(json_safe(analysis.as_dict()), allow_nan=False)


def write_csv(path: str | Path, analysis: Analysis) -> None:
    """One row per breath: the scalar fields, then layers, quadrants and ring planes."""
    rows = [b.as_dict() for b in analysis.breaths]
    extra: list[str] = [f"layer{k + 1}_pct" for k in range(4)]
    extra += ["ventral_right_pct", "ventral_left_pct", "dorsal_right_pct", "dorsal_left_pct"]
    rings = len(rows[0]["ring_planes"]) if rows else 0
    extra += [f"ring{k + 1}_{name}" for k in range(rings) for name in ("plane", "pct",
                                                                         "left_pct")]
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([*SCALAR_FIELDS, *extra])
        for row in rows:
            values = [row[name] for name in SCALAR_FIELDS] + list(row["layer_pct"])
            values += [row["quadrant_pct"][q] for q in ("ventral_right", "ventral_left",
                                                       "dorsal_right", "dorsal_left")]
            for ring in row["ring_planes"]:
                values += [ring["plane"], ring["pct"], ring["left_pct"]]
            writer.writerow(["" if isinstance(v, float) and not math.isfinite(v) else v
                             for v in values])


def fhir_bundle(analysis: Analysis, subject: str | None = None,
                start_time: str | None = None) -> dict[str, Any]:
    """A FHIR R4 `collection` Bundle with one Observation per breath."""
    origin = datetime.fromisoformat(start_time) if start_time else None
    entries = []
    for row in (b.as_dict() for b in analysis.breaths):
        components = []
        for name in SCALAR_FIELDS[1:]:
            value = row[name]
            if value is None or (isinstance(value, float) and not math.isfinite(value)):
                continue
            unit = "%" if name.endswith("_pct") else "s" if name.endswith("_s") else \
                _UCUM.get(name, "1")
            components.append({
                "code": {"coding": [{"system": CODE_SYSTEM, "code": name}]},
                "valueQuantity": {"value": float(value), "unit": unit,
                                  "system": "http://unitsofmeasure.org", "code": unit}})
        observation: dict[str, Any] = {
            "resourceType": "Observation", "status": "final",
            "category": [{"coding": [{"system": CODE_SYSTEM, "code": "eit-ventilation"}]}],
            "code": {"coding": [{"system": CODE_SYSTEM, "code": "breath",
                                 "display": "EIT ventilation parameters of one breath"}]},
            "component": components,
        }
        if origin is not None:
            observation["effectivePeriod"] = {
                "start": (origin + timedelta(seconds=row["start_s"])).isoformat(),
                "end": (origin + timedelta(seconds=row["end_s"])).isoformat()}
        if subject:
            observation["subject"] = {"reference": subject}
        entries.append({"resource": observation})
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}
