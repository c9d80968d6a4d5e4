"""`cpu/fused_net.py`: the network's fused operations against the torch ops they replace."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from worker.recon.d2ip.cpu import channels_last_ops, fused_net, library
from worker.recon.d2ip.cpu.channels_last import ChannelsLastBlocks, FusedBlocks
from worker.recon.d2ip.network import ASPP, DecoderStage, NetConfig, SqueezeExcite

CHANNELS_LAST, FUSED = ChannelsLastBlocks(), FusedBlocks()
needs_kernels = pytest.mark.skipif(not library.available(), reason="no fused kernels")


def composed(x, dw, pw, pb, lg, lb, res, dilation, slope, act):
    h = channels_last_ops.pointwise(
        x if dw is None else channels_last_ops.depthwise3(x, dw, dilation), pw, pb)
    h = F.layer_norm(h, (pw.shape[0],), lg, lb, 1e-5)
    if res is not None:
        h = h + res
    return F.leaky_relu(h, slope) if act else h


@needs_kernels
@pytest.mark.parametrize(("grid", "cin", "cout", "dilation", "with_res", "act", "with_dw"), [
    ((16, 32, 32), 8, 8, 1, True, True, True),
    ((8, 16, 16), 16, 32, 1, False, True, True),
    ((7, 11, 13), 8, 16, 2, True, False, True),
    ((2, 4, 4), 32, 64, 3, False, True, True),
    ((3, 5, 4), 24, 40, 1, True, True, True),  # widths without a compiled specialisation
    ((5, 6, 7), 32, 8, 1, False, True, False),  # no DW: the stem, ASPP's 1x1 branch
    ((2, 4, 4), 320, 64, 1, True, True, False),
])
def test_unit_equals_composed_ops(grid, cin, cout, dilation, with_res, act, with_dw) -> None:
    gen = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=gen).requires_grad_()

    x, dw, pw = rand(*grid, cin), rand(cin, 1, 3, 3, 3), rand(cout, cin, 1, 1, 1)
    pb, lg, lb = rand(cout), rand(cout), rand(cout)
    res = rand(*grid, cout) if with_res else None
    inputs = [x, pw, pb, lg, lb] + ([dw] if with_dw else []) + ([res] if with_res else [])
    dw = dw if with_dw else None
    g = torch.randn(*grid, cout, generator=gen)

    ref = composed(x, dw, pw, pb, lg, lb, res, dilation, 0.2, act)
    out = fused_net.dwsep_unit(x, dw, pw, pb, lg, lb, res, dilation=dilation, slope=0.2, act=act)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    for a, b in zip(torch.autograd.grad(ref, inputs, g), torch.autograd.grad(out, inputs, g),
                    strict=True):
        assert float((b - a).norm()) <= 1e-5 * float(a.norm()) + 1e-7


@needs_kernels
def test_unit_rejects_what_it_cannot_run() -> None:
    x = torch.zeros(2, 3, 4, 12)
    w = [torch.zeros(12, 1, 3, 3, 3), torch.zeros(8, 12), torch.zeros(8), torch.ones(8),
         torch.zeros(8)]
    with pytest.raises(ValueError, match="multiples of 8"):
        fused_net.dwsep_unit(x, *w)
    with pytest.raises(ValueError, match="float32 CPU"):
        fused_net.dwsep_unit(torch.zeros(2, 3, 4, 8, dtype=torch.float64),
                         *[t[:8] if t.shape[0] == 12 else t for t in w])
    assert library.supports(8, 64) and not library.supports(8, 12) and not library.supports(520, 8)


@needs_kernels
@pytest.mark.parametrize(("grid", "size", "channels"), [
    ((8, 16, 16), (16, 32, 32), 8), ((4, 6, 7), (7, 12, 13), 3), ((1, 2, 1), (2, 3, 1), 1),
])
def test_upsample_equals_aten(grid, size, channels) -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(*grid, channels, generator=gen, requires_grad=True)
    g = torch.randn(*size, channels, generator=gen)
    ref, out = channels_last_ops.upsample2(x, size), fused_net.upsample2(x, size)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(torch.autograd.grad(out, x, g)[0],
                               torch.autograd.grad(ref, x, g)[0], rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="cannot crop"):
        fused_net.upsample2(x.detach(), (2 * grid[0] + 1, *size[1:]))


@needs_kernels
@pytest.mark.parametrize(("grid", "cin", "cout"), [
    ((16, 32, 32), 16, 8),  # the decoder's first block: a 1x1x1 shortcut
    ((8, 16, 16), 16, 16),  # identity shortcut
    ((3, 5, 4), 24, 40),  # widths without a compiled specialisation
])
def test_res_block_equals_composed_ops(grid, cin, cout) -> None:
    gen = torch.Generator().manual_seed(4)

    def rand(*shape):
        return torch.randn(*shape, generator=gen).requires_grad_()

    x = rand(*grid, cin)
    unit1 = (rand(cin, 1, 3, 3, 3), rand(cout, cin, 1, 1, 1), rand(cout), rand(cout), rand(cout))
    unit2 = (rand(cout, 1, 3, 3, 3), rand(cout, cout, 1, 1, 1), rand(cout), rand(cout),
             rand(cout))
    shortcut = (rand(cout, cin, 1, 1, 1), rand(cout)) if cin != cout else None
    inputs = [x, *unit1, *unit2, *(shortcut or ())]
    g = torch.randn(*grid, cout, generator=gen)
    h = composed(x, *unit1, None, 1, 0.2, True)
    res = x if shortcut is None else channels_last_ops.pointwise(x, *shortcut)
    ref = composed(h, *unit2, res, 1, 0.2, True)
    out = fused_net.res_block(x, unit1, unit2, shortcut)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    for a, b in zip(torch.autograd.grad(ref, inputs, g), torch.autograd.grad(out, inputs, g),
                    strict=True):
        assert float((b - a).norm()) <= 1e-5 * float(a.norm()) + 1e-7
    with pytest.raises(ValueError, match="shortcut"):
        fused_net.res_block(torch.zeros(*grid, cin + 8), unit1, unit2)


@needs_kernels
@pytest.mark.parametrize("shape", [(16, 32, 32, 8), (7, 5, 9, 16), (3, 3, 3, 3)])
def test_max_pool_equals_aten(shape) -> None:
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(*shape, generator=gen)
    x[0, 0, 1] = x[0, 0, 0]  # a tie: the first maximum wins, as in ATen
    x[-1, -1, -1, 0] = float("nan")
    x.requires_grad_()
    ref, out = channels_last_ops.max_pool2(x), fused_net.max_pool2(x)
    torch.testing.assert_close(out, ref, rtol=0, atol=0, equal_nan=True)
    g = torch.randn(ref.shape, generator=gen)
    assert torch.equal(torch.autograd.grad(out, x, g)[0], torch.autograd.grad(ref, x, g)[0])


@needs_kernels
def test_aspp_equals_the_channels_last_path() -> None:
    torch.manual_seed(7)
    module = ASPP(32, 64, (1, 2, 3), 0.2)
    for p in module.parameters():  # LayerNorm affine and biases away from 1 and 0
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(2, 4, 3, 32, requires_grad=True)
    g = torch.randn(2, 4, 3, 64)
    ref, out = CHANNELS_LAST.aspp(x, module), FUSED.aspp(x, module)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    inputs = [x, *module.parameters()]
    for a, b in zip(torch.autograd.grad(ref, inputs, g), torch.autograd.grad(out, inputs, g),
                    strict=True):
        assert float((b - a).norm()) <= 1e-5 * float(a.norm()) + 1e-7


def _randomised(module: torch.nn.Module) -> torch.nn.Module:
    for p in module.parameters():  # biases away from 0, so every branch of the backward counts
        torch.nn.init.normal_(p, std=0.5)
    return module


@needs_kernels
def test_squeeze_excite_and_decoder_input_equal_the_channels_last_path() -> None:
    torch.manual_seed(8)
    se = _randomised(SqueezeExcite(16, 4))
    x = torch.randn(5, 6, 7, 16, requires_grad=True)
    stage = _randomised(DecoderStage(16, 8, NetConfig()))
    skip = torch.randn(7, 9, 6, 8, requires_grad=True)  # the gate's grid x2, cropped
    pooled = torch.randn(4, 5, 3, 8, requires_grad=True)
    gate = torch.randn(4, 5, 3, 16, requires_grad=True)
    cases = [(lambda blocks: blocks.squeeze_excite(x, se), [x, *se.parameters()]),
             (lambda blocks: blocks.decoder_input(gate, skip, pooled, stage),
              [gate, skip, pooled, *stage.attention.parameters(), *stage.project.parameters()])]
    for run, inputs in cases:
        ref, out = run(CHANNELS_LAST), run(FUSED)
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
        g = torch.randn(ref.shape)
        for a, b in zip(torch.autograd.grad(ref, inputs, g), torch.autograd.grad(out, inputs, g),
                        strict=True):
            assert float((b - a).norm()) <= 1e-5 * float(a.norm()) + 1e-7


@needs_kernels
def test_unit_takes_non_contiguous_weights() -> None:
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(4, 5, 6, 8, generator=gen)
    dw, pw = torch.randn(8, 1, 3, 3, 3, generator=gen), torch.randn(8, 8, generator=gen)
    rest = (torch.zeros(8), torch.ones(8), torch.zeros(8))
    strided = pw.T.contiguous().T  # the same values in column-major memory
    assert not strided.is_contiguous()
    assert torch.equal(fused_net.dwsep_unit(x, dw, strided, *rest),
                       fused_net.dwsep_unit(x, dw, pw, *rest))
