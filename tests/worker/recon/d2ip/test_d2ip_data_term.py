"""The data term of eq. (14): mean squared residual, exact through J's range; whitening."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worker.forward.model import ForwardModel
from worker.recon.d2ip.data_term import DataTerm, whitened_system
from worker.recon.d2ip.objective import LossConfig
from worker.recon.spectral import data_weights


def test_data_loss_is_the_mean_squared_residual() -> None:
    jac = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    x, dv = torch.tensor([1.0, 1.0]), torch.tensor([0.0, 0.0, 0.0])
    assert float(DataTerm(jac, rtol=None)(x, dv)) == pytest.approx((1 + 4 + 4) / 3)
    assert float(DataTerm(jac)(x, dv)) == pytest.approx((1 + 4 + 4) / 3)


def test_range_compressed_data_term_is_exact_on_redundant_rows() -> None:
    gen = torch.Generator().manual_seed(0)
    rows = torch.randn(6, 40, generator=gen)
    jac = rows.repeat_interleave(2, dim=0)  # reciprocal pairs: M = 12, rank 6
    term, plain = DataTerm(jac), DataTerm(jac, rtol=None)
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


def test_whitened_system_scales_rows_and_frames(coarse_model: ForwardModel) -> None:
    w, jac = whitened_system(coarse_model)
    np.testing.assert_array_equal(w, data_weights(coarse_model))
    np.testing.assert_allclose(jac, coarse_model.jacobian * w[:, None])
    ones, plain = whitened_system(coarse_model, whiten=False)
    assert (ones == 1).all() and np.array_equal(plain, coarse_model.jacobian)
