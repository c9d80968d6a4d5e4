"""Ventilation parameters from conductivity-change volumes: torch-free, vectorised over voxels.

Modules: `signal` (impedance curves, clinical sign), `breaths` (offline and online breath
detection), `heart` (heart rate and its filter), `lung_mask` (the lung region), `regional`
(distribution, centre of ventilation, GI, silent spaces, delay), `parameters` (per breath and
summary), `space` (voxel positions in patient coordinates), `export` (NIfTI, CSV, JSON, FHIR).
Definitions and sources: docs/ventilation.md.
"""
