"""Tensor layouts, one architecture: the blocks of `network.py` call these primitives.

`REF` works on (1, Ch, P, R, C) tensors with `torch.nn` layers (the eager reference path);
`CL` works on (P, R, C, Ch) tensors with the channels-last primitives of `ops_cl` (the fast path);
`FUSED` is `CL` with each ResConv3D block in two fused CPU kernels (`fused.py`). All read the same
parameters, so the paths compute the same function.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worker.recon.d2ip import fused, ops_cl

if TYPE_CHECKING:
    from worker.recon.d2ip.network import ResConv3d

Size3 = tuple[int, int, int]


class RefLayout:
    """(1, Ch, P, R, C): torch.nn modules as they are."""

    def resconv(self, block: ResConv3d, x: Tensor) -> Tensor:
        return block.compose(x, self)

    def depthwise(self, x: Tensor, conv: nn.Conv3d) -> Tensor:
        return conv(x)

    def pointwise(self, x: Tensor, conv: nn.Conv3d) -> Tensor:
        return conv(x)

    def norm(self, x: Tensor, ln: nn.LayerNorm) -> Tensor:
        return ln(x.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)

    def global_mean(self, x: Tensor) -> Tensor:
        return x.mean(dim=(0, 2, 3, 4))

    def scale_channels(self, x: Tensor, s: Tensor) -> Tensor:
        return x * s.view(1, -1, 1, 1, 1)

    def broadcast(self, v: Tensor, size: Size3) -> Tensor:
        return v.view(1, -1, 1, 1, 1).expand(1, v.shape[0], *size)

    def cat(self, xs: list[Tensor]) -> Tensor:
        return torch.cat(xs, dim=1)

    def size(self, x: Tensor) -> Size3:
        return tuple(x.shape[2:])  # type: ignore[return-value]

    def pool(self, x: Tensor) -> Tensor:
        return F.max_pool3d(x, 2, ceil_mode=True)

    def upsample(self, x: Tensor, size: Size3) -> Tensor:
        y = F.interpolate(x, scale_factor=2.0, mode="trilinear", align_corners=False)
        return y[:, :, :size[0], :size[1], :size[2]]


class ChannelsLastLayout:
    """(P, R, C, Ch): matmuls, last-axis LayerNorm and oneDNN depthwise convolutions."""

    def resconv(self, block: ResConv3d, x: Tensor) -> Tensor:
        return block.compose(x, self)

    def depthwise(self, x: Tensor, conv: nn.Conv3d) -> Tensor:
        return ops_cl.depthwise3(x, conv.weight, conv.dilation[0])

    def pointwise(self, x: Tensor, conv: nn.Conv3d) -> Tensor:
        return ops_cl.pointwise(x, conv.weight, conv.bias)

    def norm(self, x: Tensor, ln: nn.LayerNorm) -> Tensor:
        return ln(x)

    def global_mean(self, x: Tensor) -> Tensor:
        return x.mean(dim=(0, 1, 2))

    def scale_channels(self, x: Tensor, s: Tensor) -> Tensor:
        return x * s

    def broadcast(self, v: Tensor, size: Size3) -> Tensor:
        return v.expand(*size, v.shape[0])

    def cat(self, xs: list[Tensor]) -> Tensor:
        return torch.cat(xs, dim=-1)

    def size(self, x: Tensor) -> Size3:
        return tuple(x.shape[:3])  # type: ignore[return-value]

    def pool(self, x: Tensor) -> Tensor:
        return ops_cl.max_pool2(x)

    def upsample(self, x: Tensor, size: Size3) -> Tensor:
        return ops_cl.upsample2(x, size)


class FusedLayout(ChannelsLastLayout):
    """`ChannelsLastLayout` with ResConv3D as two fused kernels (widths multiples of 8)."""

    def resconv(self, block: ResConv3d, x: Tensor) -> Tensor:
        c1, c2 = block.conv1, block.conv2
        if not fused.supports(x.shape[-1], c1.pointwise.out_channels):
            return block.compose(x, self)
        n1, n2 = block.norm1, block.norm2
        h = fused.dwsep_unit(x, c1.depthwise.weight, c1.pointwise.weight, c1.pointwise.bias,
                             n1.weight, n1.bias, slope=block.slope, eps=n1.eps)
        return fused.dwsep_unit(h, c2.depthwise.weight, c2.pointwise.weight,
                                c2.pointwise.bias, n2.weight, n2.bias, res=block.skip(x, self),
                                slope=block.slope, eps=n2.eps)


Layout = RefLayout | ChannelsLastLayout
REF = RefLayout()
CL = ChannelsLastLayout()
FUSED = FusedLayout()
