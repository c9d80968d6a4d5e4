"""Tikhonov: the cached operator, the GCV rule, accuracy, batching and checkpoints."""

from __future__ import annotations

import numpy as np
import pytest

from worker.forward.model import ForwardModel
from worker.recon import store
from worker.recon.d2ip.cpu import library
from worker.recon.linear import LinearReconstructor
from worker.recon.spectral import gcv_minimiser, spectrum
from worker.recon.tikhonov import TRUNCATE_RTOL, Tikhonov, tikhonov_operator


def inclusion(model: ForwardModel, centre: tuple[int, int, int], radius: float) -> np.ndarray:
    """Δσ/σ0 = -0.3 in a ball of `radius` voxels around voxel `centre` (P, R, C)."""
    idx = np.indices(model.grid.shape)
    dist = np.sqrt(sum((i - c) ** 2 for i, c in zip(idx, centre, strict=True)))
    return np.where((dist <= radius) & model.mask, -0.3, 0.0)


def test_peak_of_a_small_inclusion_is_within_two_voxels(coarse_model: ForwardModel) -> None:
    s0 = coarse_model.geometry.background_conductivity
    v0 = coarse_model.solve(np.full(coarse_model.grid.shape, s0))
    centre = (4, 5, 11)  # between the rings, anterior, patient's left
    assert coarse_model.mask[centre]
    v = coarse_model.solve(s0 * (1 + inclusion(coarse_model, centre, 1.5)))
    volume = Tikhonov(coarse_model).push((v - v0) / np.abs(v0)).volume
    peak = np.unravel_index(np.argmin(volume), volume.shape)  # most negative voxel
    assert np.linalg.norm(np.subtract(peak, centre)) <= 2.0, peak


def test_operator_is_cached_beside_the_model(coarse_model: ForwardModel,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    first = tikhonov_operator(coarse_model, mu=0.3)
    files = sorted(p.name for p in store.folder(coarse_model).glob("*.npz"))
    assert any(f.startswith("tikhonov-") for f in files)
    assert any(f.startswith("spectrum-") for f in files)
    assert store.folder(coarse_model).parent == coarse_model.cache_path.parent.parent

    def fail(*_: object) -> None:
        raise AssertionError("rebuilt instead of read from the cache")

    monkeypatch.setattr(np.linalg, "eigh", fail)
    again = tikhonov_operator(coarse_model, mu=0.3)
    np.testing.assert_array_equal(again.matrix, first.matrix)
    assert first.matrix.dtype == np.float32
    assert first.matrix.shape == (coarse_model.n_voxels, coarse_model.n_measurements)


def test_matrix_solves_the_regularised_normal_equations(coarse_model: ForwardModel) -> None:
    """R Δv satisfies (JᵀWJ + μ²Γ) x = JᵀW Δv (the definition, eq. 2 with Γ = D²)."""
    op = tikhonov_operator(coarse_model, prior="noser", mu=0.2)
    w = coarse_model.operator.weights
    jw = coarse_model.jacobian * w[:, None]
    dv = np.random.default_rng(0).standard_normal(coarse_model.n_measurements) * 0.01
    x = op.matrix.astype(float) @ dv
    lhs = jw.T @ (jw @ x) + 0.2**2 * op.d.astype(float) ** 2 * x
    rhs = jw.T @ (w * dv)
    assert np.linalg.norm(lhs - rhs) <= 1e-4 * np.linalg.norm(rhs)


def test_gcv_recovers_the_noise_to_signal_ratio() -> None:
    """For white coefficients E[β²] = α²s² + η², GCV's minimiser is near μ = η/α (Wahba)."""
    s = np.logspace(0, -4, 400)
    for ratio in (1e-3, 1e-2, 1e-1):
        mu = gcv_minimiser(s, s**2 + ratio**2)
        assert ratio / 1.5 < mu < ratio * 1.5


def test_design_rule_regularises_more_at_lower_snr(coarse_model: ForwardModel) -> None:
    mus = [Tikhonov(coarse_model, snr_db=snr).settings["mu"] for snr in (40.0, 50.0, 60.0)]
    assert mus[0] > mus[1] > mus[2] > 0
    given = Tikhonov(coarse_model, mu=0.25).settings
    assert given["mu"] == 0.25 and given["mu_rule"] == "given"
    with pytest.raises(ValueError, match="prior"):
        spectrum(coarse_model, "laplace")  # type: ignore[arg-type]


@pytest.mark.parametrize("path", ["float16", "float32", "torch"])
def test_push_many_equals_push(coarse_model: ForwardModel, frames3: np.ndarray,
                               path: str) -> None:
    """One frame at a time goes through the fused kernels' product when they are built, from
    L's float16 copy by default (`half`), else through torch's matmul, as every batch does:
    the same volumes, to float32 rounding, or within 1e-3 of the volume's norm from float16."""
    single = Tikhonov(coarse_model, half=path == "float16")
    assert (single.matvec_t is not None) == library.available()
    assert single.settings["single_frame_float16"] == (path == "float16"
                                                       and library.available())
    if path == "torch":
        single.matvec_t = None
    elif single.matvec_t is None:
        pytest.skip("no fused kernels")
    one = [single.push(f) for f in frames3]
    many = Tikhonov(coarse_model).push_many(frames3)
    for a, b in zip(one, many, strict=True):
        if path == "float16":
            assert np.linalg.norm(a.volume - b.volume) <= 1e-3 * np.linalg.norm(b.volume)
            assert not np.array_equal(a.volume, b.volume)  # the copy is in use
        else:  # to float32 rounding of sums of r terms
            np.testing.assert_allclose(b.volume, a.volume, rtol=0,
                                       atol=1e-5 * np.abs(a.volume).max())
        assert b.loss == pytest.approx(a.loss, rel=1e-4)


def test_state_round_trip_continues(coarse_model: ForwardModel, frames3: np.ndarray,
                                    continues) -> None:
    continues(lambda: Tikhonov(coarse_model), frames3)
    recon = Tikhonov(coarse_model)
    recon.push_many(frames3)
    assert recon.state_dict() == {"frames": 3}


def test_quality_on_healthy_deep_breath(coarse_model: ForwardModel, healthy, cc_of) -> None:
    # Measured: CC 0.83 on these two frames (start and end of the inhalation, coarse, 50 dB)
    # and 0.85 over the 20-frame breath. 0.7 leaves room for other noise draws and platforms;
    # a wrong sign gives negative CC and an unregularised solution (μ -> 0) about 0.2.
    assert cc_of(Tikhonov(coarse_model), healthy) > 0.7


def test_factored_matrix_equals_the_dense_one(coarse_model: ForwardModel,
                                             frames3: np.ndarray) -> None:
    """R = L Q exactly (to float32 rounding) with r about M/2: the protocol keeps reciprocal
    pairs, so J's rank is half its rows (464 of 928; the Gram eigensolver's floor, about 1e-8 of
    s_0, leaves a few more columns just above `RANK_RTOL`); a frame through the factors gives
    the dense volume."""
    op = tikhonov_operator(coarse_model, mu=0.2)
    left, right = op.factors.left, op.factors.right
    m = coarse_model.n_measurements
    assert left.shape[1] == right.shape[0]
    assert 0.45 * m < left.shape[1] < 0.55 * m
    product = left.astype(float) @ right.astype(float)
    assert np.abs(product - op.matrix).max() <= 1e-5 * np.abs(op.matrix).max()
    recon = Tikhonov(coarse_model, mu=0.2, truncate=0)
    assert recon.rank == left.shape[1] == recon.settings["rank"]
    for frame, result in zip(frames3, recon.push_many(frames3), strict=True):
        dense = coarse_model.to_volume(op.matrix.astype(float) @ frame)
        np.testing.assert_allclose(result.volume, dense, rtol=0,
                                   atol=1e-5 * np.abs(dense).max())


def _objective(model: ForwardModel, op, dv: np.ndarray, volume: np.ndarray) -> float:
    """‖W^½(Δv − J x)‖² + μ²‖D x‖² at the volume's masked values, in float64."""
    x = volume[model.mask].astype(float)
    w = model.operator.weights
    return float(np.sum((w * (dv - model.jacobian @ x)) ** 2)
                 + op.mu**2 * np.sum((op.d.astype(float) * x) ** 2))


@pytest.mark.parametrize("truncate", [0.0, 1e-3, 3e-2])
def test_the_loss_is_the_objective_at_the_volume(coarse_model: ForwardModel,
                                                 frames3: np.ndarray, truncate: float) -> None:
    """The loss from the coefficients (‖b‖² − Σ fᵢcᵢ², module docstring) is the objective at
    the (truncated) volume, and untruncated the residual form's loss."""
    recon = Tikhonov(coarse_model, truncate=truncate)
    op = recon.operator
    dense = LinearReconstructor(coarse_model, op.matrix, op.residual, op.d * op.mu)
    for frame, a, b in zip(frames3, recon.push_many(frames3), dense.push_many(frames3),
                           strict=True):
        assert a.loss == pytest.approx(_objective(coarse_model, op, frame, a.volume), rel=1e-4)
        if truncate == 0:
            assert a.loss == pytest.approx(b.loss, rel=1e-4)


def test_truncation_changes_the_image_by_less_than_its_tolerance(
        coarse_model: ForwardModel, healthy_dv: np.ndarray) -> None:
    """The preview's default truncation drops components (k < r) and changes every image of a
    simulated recording (healthy-deep-breath, coarse, 50 dB) by less than 1e-3 of its norm (the
    stated tolerance, with the float16 copy of a single frame's L; docs/reconstruction.md); for
    white data the dropped share of the D-norm
    is `TRUNCATE_RTOL` (the bound, in expectation)."""
    full, cut = Tikhonov(coarse_model, truncate=0, half=False), Tikhonov(coarse_model)
    assert cut.settings["truncate"] == TRUNCATE_RTOL  # single frames: also the float16 copy
    assert cut.rank < 0.8 * full.rank  # a real saving, not a vacuous test
    op = full.operator
    for dv in healthy_dv:
        a, b = full.push(dv).volume, cut.push(dv).volume
        assert np.linalg.norm(b - a) <= 1e-3 * np.linalg.norm(a)
    noise = np.random.default_rng(0).standard_normal((400, coarse_model.n_measurements))
    white = noise / op.factors.weights  # white once whitened
    a = np.stack([r.volume[coarse_model.mask] for r in full.push_many(white)]) * op.d
    b = np.stack([r.volume[coarse_model.mask] for r in cut.push_many(white)]) * op.d
    share = np.linalg.norm(b - a) / np.linalg.norm(a)
    assert 0.5 * TRUNCATE_RTOL < share <= 1.2 * TRUNCATE_RTOL
    with pytest.raises(ValueError, match="truncate"):
        Tikhonov(coarse_model, truncate=1.0)
