"""The channels-last primitives compute what their torch.nn counterparts compute."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from worker.recon.d2ip.cpu import channels_last_ops


def _cl(x: torch.Tensor) -> torch.Tensor:
    return x[0].permute(1, 2, 3, 0)


@pytest.mark.parametrize("dilation", [1, 2, 3])
@pytest.mark.parametrize("shape", [(6, 8, 10, 4), (5, 7, 3, 3)])
def test_depthwise_matches_grouped_conv3d_with_gradients(shape, dilation) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(shape[-1], 1, 3, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    y = channels_last_ops.depthwise3(x, w, dilation)
    g = torch.randn(y.shape, generator=gen, dtype=torch.float64)
    gx, gw = torch.autograd.grad(y, (x, w), g)

    x5 = x.detach().permute(3, 0, 1, 2).unsqueeze(0).requires_grad_()
    w5 = w.detach().clone().requires_grad_()
    y5 = F.conv3d(x5, w5, padding=dilation, dilation=dilation, groups=shape[-1])
    gx5, gw5 = torch.autograd.grad(y5, (x5, w5), g.permute(3, 0, 1, 2).unsqueeze(0))

    torch.testing.assert_close(y, _cl(y5))
    torch.testing.assert_close(gx, _cl(gx5))
    torch.testing.assert_close(gw, gw5)


def test_stem_patches_match_dense_conv3d() -> None:
    gen = torch.Generator().manual_seed(1)
    z = torch.rand(1, 2, 5, 6, 7, generator=gen)
    w_stem = torch.randn(4, 2, 3, 3, 3, generator=gen)
    patches = channels_last_ops.dense3_patches(z)
    assert patches.shape == (5, 6, 7, 56)  # 2 x 27 channels, zero-padded to a multiple of 8
    assert not bool(patches[..., 54:].any())
    stem = channels_last_ops.pointwise(patches, w_stem, None)
    torch.testing.assert_close(stem, _cl(F.conv3d(z, w_stem, padding=1)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", [(8, 6, 4), (7, 5, 3), (1, 2, 1)])
def test_pool_and_upsample_match_ncdhw_ops(size) -> None:
    gen = torch.Generator().manual_seed(2)
    x5 = torch.randn(1, 3, *size, generator=gen)
    pooled = channels_last_ops.max_pool2(_cl(x5).contiguous())
    torch.testing.assert_close(pooled, _cl(F.max_pool3d(x5, 2, ceil_mode=True)))

    coarse = F.max_pool3d(x5, 2, ceil_mode=True)
    up = F.interpolate(coarse, scale_factor=2.0, mode="trilinear", align_corners=False)
    ref = up[:, :, :size[0], :size[1], :size[2]]
    torch.testing.assert_close(channels_last_ops.upsample2(_cl(coarse).contiguous(), size),
                               _cl(ref))
