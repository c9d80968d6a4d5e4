"""Tensor layouts, one architecture: the blocks of `network.py` call these primitives.

`REF` works on (1, Ch, P, R, C) tensors with `torch.nn` layers (the eager reference path);
`CL` works on (P, R, C, Ch) tensors with the channels-last primitives of `ops_cl` (the fast path);
`FUSED` is `CL` with each `unit` (conv, LayerNorm, residual, LeakyReLU) in one fused CPU kernel
(`fused.py`). All read the same parameters, so the paths compute the same function.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worker.recon.d2ip import fused, fused_net, ops_cl

if TYPE_CHECKING:
    from worker.recon.d2ip.network import (
        ASPP,
        AttentionGate,
        DecoderStage,
        ResConv3d,
        SqueezeExcite,
    )

Size3 = tuple[int, int, int]


class _Units:
    """`unit` from the layout's own primitives."""

    def unit(self: Layout, x: Tensor, dw: nn.Conv3d | None, conv: nn.Conv3d,
             ln: nn.LayerNorm, slope: float, res: Tensor | None = None) -> Tensor:
        """LeakyReLU(LN(conv(DW(x))) + res): the unit every block is built from (DW optional)."""
        h = self.norm(self.pointwise(x if dw is None else self.depthwise(x, dw), conv), ln)
        return F.leaky_relu(h if res is None else h + res, slope)

    def resconv(self: Layout, x: Tensor, block: ResConv3d) -> Tensor:
        """ResConv3D: unit 2 of unit 1 of x, with the block's shortcut of x as the residual."""
        c1, c2 = block.conv1, block.conv2
        h = self.unit(x, c1.depthwise, c1.pointwise, block.norm1, block.slope)
        s = x if block.shortcut is None else self.pointwise(x, block.shortcut)
        return self.unit(h, c2.depthwise, c2.pointwise, block.norm2, block.slope, res=s)


    def squeeze_excite(self: Layout, x: Tensor, m: SqueezeExcite) -> Tensor:
        """SE: x times sigmoid(fc2(relu(fc1(the channels' means)))), per channel."""
        return self.scale_channels(x, torch.sigmoid(m.fc2(F.relu(m.fc1(self.global_mean(x))))))

    def attention(self: Layout, skip: Tensor, pooled_skip: Tensor, gate: Tensor,
                  m: AttentionGate) -> Tensor:
        """The attention gate: skip times the upsampled sigmoid(psi(relu(theta(pooled skip)
        + phi(gate))))."""
        q = F.relu(self.pointwise(pooled_skip, m.theta) + self.pointwise(gate, m.phi))
        a = torch.sigmoid(self.pointwise(q, m.psi))
        return skip * self.upsample(a, self.size(skip))

    def decoder_input(self: Layout, gate: Tensor, skip: Tensor, pooled_skip: Tensor,
                      m: DecoderStage) -> Tensor:
        """A decoder stage's input: the projected, upsampled gate and the attended skip."""
        attended = m.attention(skip, pooled_skip, gate, self)
        up = self.upsample(self.pointwise(gate, m.project), self.size(skip))
        return self.cat([up, attended])

    def aspp(self: Layout, x: Tensor, m: ASPP) -> Tensor:
        """ASPP: the 1x1x1 and dilated branch units of x, the pooled branch, the fuse unit."""
        feats = [self.unit(x, None, m.point, m.norms[0], m.slope)]
        feats += [self.unit(x, conv.depthwise, conv.pointwise, norm, m.slope)
                  for conv, norm in zip(m.atrous, m.norms[1:], strict=True)]
        pooled = F.leaky_relu(m.pool_fc(self.global_mean(x)), m.slope)
        feats.append(self.broadcast(pooled, self.size(x)))
        return self.unit(self.cat(feats), None, m.fuse, m.fuse_norm, m.slope)


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
    """`ChannelsLastLayout` with each `unit` and each ResConv3D block in fused kernels (widths
    multiples of 8), and the max pooling and x2 upsampling in kernels of their own."""

    def unit(self, x: Tensor, dw: nn.Conv3d | None, conv: nn.Conv3d, ln: nn.LayerNorm,
             slope: float, res: Tensor | None = None) -> Tensor:
        if not fused.supports(x.shape[-1], conv.out_channels):
            return super().unit(x, dw, conv, ln, slope, res)
        return fused_net.dwsep_unit(x, *_unit_tensors(x.shape[-1], dw, conv, ln), res,
                                dilation=_dilation(dw), slope=slope, eps=ln.eps)

    def resconv(self, x: Tensor, block: ResConv3d) -> Tensor:
        c1, c2 = block.conv1, block.conv2
        if not fused.supports(x.shape[-1], c1.pointwise.out_channels):
            return super().resconv(x, block)
        sc, co = block.shortcut, c1.pointwise.out_channels
        return fused_net.res_block(x, _unit_tensors(x.shape[-1], c1.depthwise, c1.pointwise,
                                                block.norm1),
                               _unit_tensors(co, c2.depthwise, c2.pointwise, block.norm2),
                               None if sc is None else (sc.weight, sc.bias), slope=block.slope,
                               eps=block.norm1.eps)

    def aspp(self, x: Tensor, m: ASPP) -> Tensor:
        ci, co = x.shape[-1], m.point.out_channels
        if not (fused.supports(ci, co) and fused.supports(m.fuse.in_channels, co)):
            return super().aspp(x, m)
        branches = [_unit_tensors(ci, None, m.point, m.norms[0])]
        branches += [_unit_tensors(ci, conv.depthwise, conv.pointwise, norm)
                     for conv, norm in zip(m.atrous, m.norms[1:], strict=True)]
        dilations = (1, *(conv.depthwise.dilation[0] for conv in m.atrous))
        return fused_net.aspp(x, branches, dilations, (m.pool_fc.weight, m.pool_fc.bias),
                              _unit_tensors(m.fuse.in_channels, None, m.fuse, m.fuse_norm),
                              slope=m.slope, eps=m.fuse_norm.eps)

    def squeeze_excite(self, x: Tensor, m: SqueezeExcite) -> Tensor:
        return fused_net.squeeze_excite(x, (m.fc1.weight, m.fc1.bias), (m.fc2.weight, m.fc2.bias))

    def decoder_input(self, gate: Tensor, skip: Tensor, pooled_skip: Tensor,
                      m: DecoderStage) -> Tensor:
        a = m.attention
        return fused_net.decoder_input(gate, skip, pooled_skip,
                                       (m.project.weight, m.project.bias), a.theta.weight,
                                       (a.phi.weight, a.phi.bias), (a.psi.weight, a.psi.bias))

    def pool(self, x: Tensor) -> Tensor:
        return fused_net.max_pool2(x)

    def upsample(self, x: Tensor, size: Size3) -> Tensor:
        return fused_net.upsample2(x, size)


def _unit_tensors(cin: int, dw: nn.Conv3d | None, conv: nn.Conv3d,
                  ln: nn.LayerNorm) -> tuple[Tensor | None, Tensor, Tensor, Tensor, Tensor]:
    """(DW weight, conv matrix, conv bias, LN weight, LN bias) as the kernels take them, for
    an input of `cin` channels."""
    return (None if dw is None else dw.weight, ops_cl.weight_matrix(conv.weight, cin),
            conv.bias, ln.weight, ln.bias)


def _dilation(dw: nn.Conv3d | None) -> int:
    return 1 if dw is None else dw.dilation[0]


Layout = RefLayout | ChannelsLastLayout
REF = RefLayout()
CL = ChannelsLastLayout()
FUSED = FusedLayout()
