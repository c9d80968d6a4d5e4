"""Complete electrode model: conservation, reciprocity, gauge, mesh convergence."""

from __future__ import annotations

import numpy as np
import pytest

from service.contract.geometry import resolve_geometry
from worker.forward.fem import CEM, measure
from worker.forward.mesh import build_mesh


@pytest.fixture(scope="module")
def cem() -> CEM:
    spec = resolve_geometry({"preset": "thorax-2x16", "mesh_size": 0.02})
    return CEM(build_mesh(spec), spec.electrodes.contact_impedance)


def _heterogeneous(cem: CEM) -> np.ndarray:
    centroid = cem.mesh.nodes[cem.mesh.tets].mean(axis=1)
    return 0.24 * (1 + 0.5 * np.tanh(20 * centroid[:, 0]) + 0.3 * np.cos(15 * centroid[:, 2]))


def test_current_is_conserved(cem: CEM) -> None:
    sol = cem.solve(_heterogeneous(cem))
    currents = cem.electrode_currents(sol)
    L = cem.n_electrodes
    expected = np.vstack([np.eye(L - 1), -np.ones((1, L - 1))])
    assert np.abs(currents - expected).max() < 1e-9
    assert np.abs(currents.sum(axis=0)).max() < 1e-9


def test_reciprocity(cem: CEM) -> None:
    """Driving pair A and measuring pair B equals driving B and measuring A (to 1e-8)."""
    sol = cem.solve(_heterogeneous(cem))
    L = cem.n_electrodes
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b, c, d = rng.choice(L, size=4, replace=False)
        drive, meas = np.zeros((1, L)), np.zeros((1, L))
        drive[0, [a, b]] = 1, -1
        meas[0, [c, d]] = 1, -1
        z_ab_cd = measure(sol, drive, np.array([0]), meas)[0]
        z_cd_ab = measure(sol, meas, np.array([0]), drive)[0]
        assert z_ab_cd == pytest.approx(z_cd_ab, rel=1e-8)


def test_gauge_is_well_defined_and_measurements_do_not_depend_on_it(cem: CEM) -> None:
    sigma = _heterogeneous(cem)
    a, b = cem.solve(sigma, ground=-1), cem.solve(sigma, ground=7)
    assert np.abs(a.electrode.sum(axis=0)).max() < 1e-12 * np.abs(a.electrode).max()
    assert np.allclose(a.electrode, b.electrode, rtol=0, atol=1e-10 * np.abs(a.electrode).max())
    L = cem.n_electrodes
    drive = np.eye(L)[:4] - np.roll(np.eye(L), 5, axis=1)[:4]
    w = np.eye(L)[10:14] - np.eye(L)[11:15]
    inj = np.arange(4)
    assert np.allclose(measure(a, drive, inj, w), measure(b, drive, inj, w), rtol=1e-10)


def test_voltages_converge_under_mesh_refinement() -> None:
    spec = resolve_geometry({"preset": "cylinder-1x32"})
    L = spec.electrodes.count
    drive = (np.eye(L) - np.roll(np.eye(L), 5, axis=1))[:8]
    w = (np.eye(L) - np.roll(np.eye(L), 5, axis=1))[12:20]
    volts = []
    for h in (0.03, 0.02, 0.0133, 0.0089):
        mesh = build_mesh(spec, size=h)
        sol = CEM(mesh, spec.electrodes.contact_impedance).solve(spec.background_conductivity)
        volts.append(measure(sol, drive, np.arange(8), w))
    err = [np.linalg.norm(v - volts[-1]) / np.linalg.norm(volts[-1]) for v in volts[:-1]]
    assert err[0] > err[1] > err[2]
    assert err[2] < 0.02
