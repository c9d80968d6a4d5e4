"""Tensor layouts, one architecture: the blocks of `network.py` call these primitives.

`REF` works on (1, Ch, P, R, C) tensors with `torch.nn` layers (the eager reference path);
`CL` works on (P, R, C, Ch) tensors with the channels-last primitives of `ops_cl` (the fast path);
`FUSED` is `CL` with each `unit` (conv, LayerNorm, residual, LeakyReLU) in one fused CPU kernel
(`fused.py`). All read the same parameters, so the paths compute the same function.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worker.recon.d2ip import fused, ops_cl

Size3 = tuple[int, int, int]


class _Units:
    """`unit` from the layout's own primitives."""

    def unit(self: Layout, x: Tensor, dw: nn.Conv3d | None, conv: nn.Conv3d,
             ln: nn.LayerNorm, slope: float, res: Tensor | None = None) -> Tensor:
        """LeakyReLU(LN(conv(DW(x))) + res): the unit every block is built from (DW optional)."""
        h = self.norm(self.pointwise(x if dw is None else self.depthwise(x, dw), conv), ln)
        return F.leaky_relu(h if res is None else h + res, slope)

    def unit_and_conv(self: Layout, x: Tensor, dw: nn.Conv3d | None, conv: nn.Conv3d,
                      ln: nn.LayerNorm, slope: float, side: nn.Conv3d) -> tuple[Tensor, Tensor]:
        """(`unit(x, ...)`, `side(x)`): a unit and a 1x1x1 conv of the same input."""
        return self.unit(x, dw, conv, ln, slope), self.pointwise(x, side)


class RefLayout(_Units):
    """(1, Ch, P, R, C): torch.nn modules as they are."""

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


class ChannelsLastLayout(_Units):
    """(P, R, C, Ch): matmuls, last-axis LayerNorm and oneDNN depthwise convolutions.

    `pointwise` of the stem's 3x3x3 conv takes the precomputed patches of Z (a matmul)."""

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
    """`ChannelsLastLayout` with each `unit` in one fused kernel (widths multiples of 8) and
    the x2 upsampling in another."""

    def unit(self, x: Tensor, dw: nn.Conv3d | None, conv: nn.Conv3d, ln: nn.LayerNorm,
             slope: float, res: Tensor | None = None) -> Tensor:
        if not fused.supports(x.shape[-1], conv.out_channels):
            return super().unit(x, dw, conv, ln, slope, res)
        return fused.dwsep_unit(*_unit_tensors(x, dw, conv, ln), res,
                                dilation=_dilation(dw), slope=slope, eps=ln.eps)

    def unit_and_conv(self, x: Tensor, dw: nn.Conv3d | None, conv: nn.Conv3d,
                      ln: nn.LayerNorm, slope: float, side: nn.Conv3d) -> tuple[Tensor, Tensor]:
        if not fused.supports(x.shape[-1], conv.out_channels):
            return super().unit_and_conv(x, dw, conv, ln, slope, side)
        return fused.dwsep_unit_with_skip(*_unit_tensors(x, dw, conv, ln), side.weight,
                                          side.bias, dilation=_dilation(dw), slope=slope,
                                          eps=ln.eps)

    def upsample(self, x: Tensor, size: Size3) -> Tensor:
        return fused.upsample2(x, size)


def _unit_tensors(x: Tensor, dw: nn.Conv3d | None, conv: nn.Conv3d,
                  ln: nn.LayerNorm) -> tuple[Tensor, Tensor | None, Tensor, Tensor, Tensor,
                                             Tensor]:
    """(x, DW weight, conv matrix, conv bias, LN weight, LN bias) as the kernels take them."""
    return (x, None if dw is None else dw.weight, ops_cl.weight_matrix(conv.weight, x.shape[-1]),
            conv.bias, ln.weight, ln.bias)


def _dilation(dw: nn.Conv3d | None) -> int:
    return 1 if dw is None else dw.dilation[0]


Layout = RefLayout | ChannelsLastLayout
REF = RefLayout()
CL = ChannelsLastLayout()
FUSED = FusedLayout()
