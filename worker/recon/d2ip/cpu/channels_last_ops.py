"""Channels-last primitives of the CPU's evaluation of 3D-FastResUNet (`channels_last.py`).

Activations are (P, R, C, Ch) tensors (no batch axis, channels contiguous), so that pointwise
1x1x1 convolutions are plain matmuls and LayerNorm over channels is `F.layer_norm` on the last
axis. The depthwise convolution, pooling and upsampling hand oneDNN/ATen (1, Ch, P, R, C) views
with canonical channels_last_3d strides, which select their vectorised channels-last kernels;
the depthwise backward is rewritten as forward convolutions (see `_Depthwise3`). The stem's 3x3x3
convolution of the fixed noise Z is one matmul with precomputed patches. Every function here
computes the same value as its counterpart in `network.py`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


def from_cl(x: Tensor) -> Tensor:
    """(P, R, C, Ch) -> (1, Ch, P, R, C) view with canonical channels_last_3d strides.

    (oneDNN picks its fast channels-last kernels only when even the batch stride is canonical.)
    """
    return x.unsqueeze(0).permute(0, 4, 1, 2, 3)


class _Depthwise3(torch.autograd.Function):
    """Depthwise 3x3x3 convolution of a (P, R, C, Ch) tensor, every direction a oneDNN forward conv.

    PyTorch's CPU backward of a grouped Conv3d is several times slower than its forward; here the
    input gradient is the convolution of the output gradient with the flipped kernel, and the
    weight gradient is the convolution of the padded input with the output gradient as kernel.
    Tensors are handed to oneDNN as (1, Ch, P, R, C) channels-last views with canonical strides.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, dilation: int) -> Tensor:
        x = x.contiguous()
        ctx.save_for_backward(x, weight)
        ctx.dilation = dilation
        y = F.conv3d(from_cl(x), weight, padding=dilation, dilation=dilation,
                     groups=weight.shape[0])
        return y.permute(0, 2, 3, 4, 1).reshape(x.shape)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        x, weight = ctx.saved_tensors
        d = ctx.dilation
        ch = weight.shape[0]
        g5 = from_cl(grad.contiguous())
        gx = gw = None
        if ctx.needs_input_grad[0]:
            gx = F.conv3d(g5, weight.flip(2, 3, 4), padding=d, dilation=d, groups=ch)
            gx = gx.permute(0, 2, 3, 4, 1).reshape(x.shape)
        if ctx.needs_input_grad[1]:
            xp = F.pad(from_cl(x), (d, d, d, d, d, d))
            gw = F.conv3d(xp, g5.permute(1, 0, 2, 3, 4), stride=d, groups=ch)
            gw = gw.permute(1, 0, 2, 3, 4)
        return gx, gw, None


def depthwise3(x: Tensor, weight: Tensor, dilation: int = 1) -> Tensor:
    """Depthwise 3x3x3 cross-correlation, zero padding `dilation`, same output size.

    `weight` is the grouped Conv3d weight (Ch, 1, 3, 3, 3).
    """
    return _Depthwise3.apply(x, weight, dilation)


def weight_matrix(weight: Tensor, cin: int) -> Tensor:
    """A Conv3d weight (Cout, Cin, kd, kh, kw) as the (Cout, `cin`) matrix that multiplies
    channels-last inputs: a 1x1x1 conv's own matrix, or a dense conv's weight against the
    patches of `dense3_patches`, with zero columns for their padding channels."""
    w = weight.reshape(weight.shape[0], -1)
    return F.pad(w, (0, cin - w.shape[1])) if cin > w.shape[1] else w


def pointwise(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """1x1x1 convolution (`weight` the Conv3d weight (Cout, Cin, 1, 1, 1)), or a dense conv of
    the input whose patches `x` holds (see `dense3_patches`)."""
    return F.linear(x, weight_matrix(weight, x.shape[-1]), bias)


def dense3_patches(z: Tensor) -> Tensor:
    """Unfolded 3x3x3 zero-padded neighbourhoods of the fixed input (1, Cin, P, R, C).

    Returns (P, R, C, n) in the Conv3d weight's (Cin, kd, kh, kw) order, so that the stem
    convolution of the constant noise Z becomes one matmul with precomputed patches; the Cin * 27
    channels are zero-padded to n, a multiple of 8 (the fused kernels' vector width).
    """
    _, cin, p, r, c = z.shape
    zp = F.pad(z[0], (1, 1, 1, 1, 1, 1))
    cols = [zp[i, a:a + p, b:b + r, e:e + c]
            for i in range(cin) for a in range(3) for b in range(3) for e in range(3)]
    cols += [torch.zeros_like(cols[0])] * (-len(cols) % 8)
    return torch.stack(cols, dim=-1).contiguous()


def max_pool2(x: Tensor) -> Tensor:
    """2x2x2 max pooling with ceil mode (an odd axis keeps its last voxel alone)."""
    return F.max_pool3d(from_cl(x), 2, ceil_mode=True)[0].permute(1, 2, 3, 0)


def upsample2(x: Tensor, size: tuple[int, int, int]) -> Tensor:
    """Trilinear x2 upsampling (align_corners=False), cropped to `size` (2n or 2n - 1 per axis)."""
    y = F.interpolate(from_cl(x), scale_factor=2.0, mode="trilinear", align_corners=False)
    return y[0, :, :size[0], :size[1], :size[2]].permute(1, 2, 3, 0)
