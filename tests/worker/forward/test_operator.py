"""The shared whitened operator: weights, adjointness, and a singular system built once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from worker.forward import operator as operator_module
from worker.forward.model import ForwardModel
from worker.forward.operator import NORMALISE_FLOOR, JacobianOperator, whitening_weights


def test_weights_whiten_a_constant_noise_floor() -> None:
    v0 = np.array([2.0, -1.0, 0.01, 1.0])
    rms = np.sqrt(np.mean(v0**2))
    np.testing.assert_allclose(whitening_weights(v0),
                               np.maximum(np.abs(v0), NORMALISE_FLOOR * rms) / rms)


def test_adjointness(coarse_model: ForwardModel) -> None:
    """<A x, r> = <x, Aᵀ r> and A x = W^½ J x."""
    operator = coarse_model.operator
    rng = np.random.default_rng(0)
    x = rng.standard_normal(operator.n_voxels)
    r = rng.standard_normal(operator.n_measurements)
    assert np.dot(operator.apply(x), r) == pytest.approx(np.dot(x, operator.adjoint(r)),
                                                         rel=1e-10)
    np.testing.assert_allclose(operator.apply(x),
                               operator.weights * (coarse_model.jacobian @ x), rtol=1e-10)


def test_spectrum_is_the_singular_system(coarse_model: ForwardModel) -> None:
    operator = coarse_model.operator
    u, s = operator.spectrum.basis, operator.spectrum.singular_values
    assert np.all(np.diff(s) <= 0)
    np.testing.assert_allclose(s[:20], np.linalg.svd(operator.whitened,
                                                      compute_uv=False)[:20], rtol=1e-8)
    basis = operator.range_basis()
    assert basis.shape[1] == int(np.sum(s > 1e-6 * s[0])) <= operator.n_measurements
    np.testing.assert_allclose(basis.T @ basis, np.eye(basis.shape[1]), atol=1e-10)
    gram_u = operator.apply(operator.adjoint(u[:, :3]))
    np.testing.assert_allclose(gram_u, u[:, :3] * s[:3] ** 2, rtol=1e-8, atol=1e-8 * s[0] ** 2)


def test_one_operator_and_one_decomposition_per_model(
        coarse_model: ForwardModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every method shares `model.operator`; its range is decomposed once, then read back."""
    calls: list[int] = []
    original = operator_module.gram_spectrum

    def counted(matrix: np.ndarray) -> operator_module.RangeSpectrum:
        calls.append(matrix.shape[0])
        return original(matrix)

    monkeypatch.setattr(operator_module, "gram_spectrum", counted)
    assert coarse_model.operator is coarse_model.operator
    path = tmp_path / "operator.npz"
    fresh = JacobianOperator.from_reference(coarse_model.jacobian,
                                            coarse_model.reference_voltages, path)
    first = fresh.spectrum
    assert fresh.spectrum is first and fresh.range_basis().shape[0] == fresh.n_measurements
    assert calls == [fresh.n_measurements] and path.is_file()
    again = JacobianOperator.from_reference(coarse_model.jacobian,
                                            coarse_model.reference_voltages, path)
    np.testing.assert_array_equal(again.spectrum.basis, first.basis)
    assert len(calls) == 1  # read from the file, not decomposed again


def test_methods_share_the_model_operator(coarse_model: ForwardModel,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Tikhonov, TV and R-SIP all use the one operator: TV's data step is its spectrum."""
    from worker.recon.rsip import RSIP
    from worker.recon.tv import TotalVariation

    spectrum = coarse_model.operator.spectrum  # built (or read) once for the model

    def fail(_: np.ndarray) -> None:
        raise AssertionError("the range was decomposed again")

    monkeypatch.setattr(operator_module, "gram_spectrum", fail)
    tv = TotalVariation(coarse_model)
    np.testing.assert_allclose(tv.s2.numpy(), (spectrum.singular_values**2).astype(np.float32))
    rsip = RSIP(coarse_model)
    np.testing.assert_array_equal(rsip.a.numpy(), tv.a.numpy())
    assert coarse_model.operator.spectrum is spectrum
