"""`fused_loss.py`: the data term's J products and the TV prior against torch."""

from __future__ import annotations

import pytest
import torch

from worker.bench.synthetic import make_problem
from worker.recon.d2ip.cpu import fused_loss, library
from worker.recon.d2ip.prior import MaskGeometry, temporal_tv, temporal_weights
from worker.recon.finite_difference import total_variation

needs_kernels = pytest.mark.skipif(not library.available(), reason="no fused kernels")


@needs_kernels
def test_matvec_equals_matmul() -> None:
    gen = torch.Generator().manual_seed(4)
    for m, n in ((464, 11008), (5, 3), (13, 1027)):  # row and column tails
        a = torch.randn(m, n, generator=gen)
        x = torch.randn(n, generator=gen, requires_grad=True)
        g = torch.randn(m, generator=gen)
        y = fused_loss.matvec(a, x)
        (gx,) = torch.autograd.grad(y, x, g)
        # against float64, within float32 rounding of the sums of |products|
        a64, x64, g64 = a.double(), x.detach().double(), g.double()
        assert ((y.double() - a64 @ x64).abs() <= 1e-6 * (a64.abs() @ x64.abs())).all()
        assert ((gx.double() - a64.T @ g64).abs() <= 1e-6 * (a64.abs().T @ g64.abs())).all()
    with pytest.raises(ValueError, match="contiguous"):
        fused_loss.matvec(a.T, torch.zeros(m))


@needs_kernels
def test_transposed_matvec_writes_a_t_y_into_out() -> None:
    """The single-frame reconstruction's product (`worker.recon.linear`): aᵀ y, into `out`
    when given, and refused for shapes and types the kernel would misread."""
    gen = torch.Generator().manual_seed(5)
    a, y = torch.randn(37, 2051, generator=gen), torch.randn(37, generator=gen)
    out = torch.full((2051,), float("nan"))
    assert fused_loss.transposed_matvec(a, y, out) is out
    a64, y64 = a.double(), y.double()
    assert ((out.double() - a64.T @ y64).abs() <= 1e-6 * (a64.abs().T @ y64.abs())).all()
    assert torch.equal(fused_loss.transposed_matvec(a, y), out)  # deterministic
    for bad in ((a, torch.zeros(36)), (a, y.double()), (a.T.contiguous().T, y),
                (a, y, torch.empty(2050))):
        with pytest.raises(ValueError):
            fused_loss.transposed_matvec(*bad)


@needs_kernels
def test_a_float16_matrix_gives_the_product_of_its_values() -> None:
    """A float16 matrix: its elements converted exactly, summed as the float32 product sums
    them (the same values where the columns fill whole vectors; the tail's order may differ
    by a rounding), and the scalar conversion (the fallback without F16C) exact on all 65536
    bit patterns."""
    gen = torch.Generator().manual_seed(6)
    a, y = torch.randn(37, 2051, generator=gen).half(), torch.randn(37, generator=gen)
    half, single = (fused_loss.transposed_matvec(m, y) for m in (a, a.float().contiguous()))
    assert torch.equal(half[:2048], single[:2048])
    assert torch.allclose(half, single, rtol=1e-6, atol=1e-6)
    bits = torch.arange(65536, dtype=torch.int32).to(torch.int16).view(torch.float16)
    lib = library.kernels()
    converted = torch.tensor([lib.eitmon_half_to_float(i) for i in range(65536)])
    expected = bits.float()
    assert torch.equal(converted.isnan(), expected.isnan())
    assert torch.equal(converted[~expected.isnan()], expected[~expected.isnan()])


@needs_kernels
@pytest.mark.parametrize("filled", [0, 3, 10])
def test_tv_prior_equals_the_shared_tv_and_the_temporal_term(filled) -> None:
    """The C++ TV kernel against `finite_difference.total_variation` (eq. 12) plus
    `prior.temporal_tv` (eq. 13): values and gradients."""
    problem = make_problem((8, 16, 16), n_meas=64, seed=0)
    geom = MaskGeometry.from_mask(problem.mask)
    gen = torch.Generator().manual_seed(5)
    previous = 0.1 * torch.randn(10, geom.n_inside, generator=gen)
    weights = temporal_weights(filled, 10)
    vol = (0.1 * torch.randn(8, 16, 16, generator=gen)).requires_grad_()
    values = vol.reshape(-1)[geom.index]
    ref = (1.0 * total_variation(values, geom.difference, 1e-6)
           + 0.1 * temporal_tv(values, previous, weights, 1e-6))
    out = fused_loss.tv_prior(vol, geom, previous, weights, 1e-6, 1.0, 0.1)
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=0)
    (g_ref,) = torch.autograd.grad(3 * ref, vol)
    (g_out,) = torch.autograd.grad(3 * out, vol)
    torch.testing.assert_close(g_out, g_ref, rtol=1e-5, atol=1e-9)

