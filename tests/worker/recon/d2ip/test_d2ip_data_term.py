"""The data term of eq. (14): mean squared residual, exact through J's range; whitening."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worker.forward.model import ForwardModel
from worker.recon.d2ip.data_term import RANGE_RTOL, DataTerm, range_basis, whitened_system
from worker.recon.d2ip.objective import LossConfig


def test_data_loss_is_the_mean_squared_residual() -> None:
    jac = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    x, dv = torch.tensor([1.0, 1.0]), torch.tensor([0.0, 0.0, 0.0])
    assert float(DataTerm(jac, None)(x, dv)) == pytest.approx((1 + 4 + 4) / 3)
    assert float(DataTerm(jac, range_basis(jac))(x, dv)) == pytest.approx((1 + 4 + 4) / 3)


def test_range_compressed_data_term_is_exact_on_redundant_rows() -> None:
    gen = torch.Generator().manual_seed(0)
    rows = torch.randn(6, 40, generator=gen)
    jac = rows.repeat_interleave(2, dim=0)  # reciprocal pairs: M = 12, rank 6
    term, plain = DataTerm(jac, range_basis(jac)), DataTerm(jac, None)
    assert term.rank == 6 and plain.rank == 12
    x = torch.randn(40, generator=gen, requires_grad=True)
    dv = torch.randn(12, generator=gen)  # has a part outside J's range
    a, b = term(x, dv), plain(x, dv)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    ga, gb = torch.autograd.grad(a, x)[0], torch.autograd.grad(b, x)[0]
    torch.testing.assert_close(ga, gb, rtol=1e-4, atol=1e-6)

def test_loss_defaults_follow_the_paper() -> None:
    cfg = LossConfig()
    assert (cfg.lam, cfg.lam_s, cfg.lam_t) == (0.002, 1.0, 0.1)


def test_whitened_system_is_the_models_shared_operator(coarse_model: ForwardModel) -> None:
    assert whitened_system(coarse_model) is coarse_model.operator
    plain = whitened_system(coarse_model, whiten=False)
    assert (plain.weights == 1).all() and np.array_equal(plain.whitened, coarse_model.jacobian)


def test_range_of_a_tensor_jacobian_is_the_operators(coarse_model: ForwardModel) -> None:
    """`range_basis` of J as a tensor spans the shared operator's range (unit weights)."""
    jac = torch.from_numpy(coarse_model.jacobian)
    basis = range_basis(jac).double()
    theirs = torch.from_numpy(whitened_system(coarse_model, whiten=False).range_basis(RANGE_RTOL))
    assert basis.shape == theirs.shape
    torch.testing.assert_close(basis @ basis.T, theirs @ theirs.T, rtol=0, atol=1e-6)


def test_model_range_basis_gives_the_plain_data_term(coarse_model: ForwardModel) -> None:
    """With the model operator's cached range basis the data term equals the plain one."""
    operator = coarse_model.operator
    jac = torch.tensor(operator.whitened, dtype=torch.float32)
    term = DataTerm(jac, torch.from_numpy(operator.range_basis(RANGE_RTOL)))
    plain = DataTerm(jac, None)
    gen = torch.Generator().manual_seed(3)
    x = 0.05 * torch.randn(coarse_model.n_voxels, generator=gen)
    dv = torch.randn(coarse_model.n_measurements, generator=gen) * 1e-3
    assert term.rank < plain.rank
    torch.testing.assert_close(term(x, dv), plain(x, dv), rtol=1e-4, atol=0)


@pytest.mark.parametrize("compressed", [False, True])
def test_amplitude_fit_is_the_least_squares_scale(compressed: bool) -> None:
    """alpha minimises ||alpha J x - dv||^2 over alpha >= 0, and the term is taken there."""
    gen = torch.Generator().manual_seed(1)
    jac = torch.randn(6, 30, generator=gen).repeat_interleave(2, dim=0)  # rank 6 of M = 12
    term = DataTerm(jac, range_basis(jac) if compressed else None)
    x = torch.randn(30, generator=gen)
    dv = 2.5 * (jac @ x) + 0.1 * torch.randn(12, generator=gen)
    alpha, loss = term.amplitude_fit(x, dv)
    jx = (jac @ x).double()
    exact = float(jx @ dv.double() / (jx @ jx))
    assert float(alpha) == pytest.approx(exact, rel=1e-5)
    assert 2.3 < exact < 2.7
    torch.testing.assert_close(loss, term(alpha * x, dv), rtol=1e-5, atol=1e-7)
    for other in (0.9 * exact, 1.1 * exact):  # a minimum
        assert float(term(other * x, dv)) > float(loss)


def test_amplitude_fit_never_flips_the_sign_and_survives_zero() -> None:
    jac = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    x = torch.tensor([1.0, 1.0])
    alpha, loss = DataTerm(jac, None).amplitude_fit(x, -(jac @ x))
    assert float(alpha) == 0.0 and float(loss) == pytest.approx((1 + 4 + 4) / 3)
    alpha, _ = DataTerm(jac, None).amplitude_fit(torch.zeros(2), jac @ x)
    assert float(alpha) == 0.0
