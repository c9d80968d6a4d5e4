"""phi(theta | Z) of `FastResUNet3D` on channels-last tensors: the CPU's faster evaluation.

`ChannelsLastBlocks` computes each block of `network.py` from the block's own parameters on
(P, R, C, Ch) tensors with the primitives of `channels_last_ops`; `FusedBlocks` runs each unit
(conv, LayerNorm, residual, LeakyReLU), each ResConv3D block, ASPP, the SE unit, a decoder
stage's input, the pooling and the upsampling in the fused C++ kernels (`fused_net`).
`ChannelsLastNetwork` walks the network with either. All compute the reference function of
`network.py` (tested: the contract between `d2ip/` and `d2ip/cpu/`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worker.recon.d2ip.cpu import fused_net, library
from worker.recon.d2ip.cpu.channels_last_ops import (
    dense3_patches,
    depthwise3,
    max_pool2,
    pointwise,
    upsample2,
    weight_matrix,
)
from worker.recon.d2ip.network import (
    ASPP,
    DecoderStage,
    DWSepConv3d,
    EncoderStage,
    FastResUNet3D,
    ResConv3d,
    SqueezeExcite,
)

Size3 = tuple[int, int, int]


def _size(x: Tensor) -> Size3:
    return tuple(x.shape[:3])  # type: ignore[return-value]


class ChannelsLastBlocks:
    """The network's blocks on (P, R, C, Ch) tensors: matmuls, last-axis LayerNorm and oneDNN
    depthwise convolutions. The stem's 3x3x3 conv takes the precomputed patches of Z (a
    matmul)."""

    def unit(self, x: Tensor, dw: nn.Conv3d | None, conv: nn.Conv3d, norm: nn.LayerNorm,
             slope: float, res: Tensor | None = None) -> Tensor:
        """LeakyReLU(LN(conv(DW(x))) + res) (`network.unit`; DW optional)."""
        h = norm(pointwise(x if dw is None else depthwise3(x, dw.weight, dw.dilation[0]),
                           conv.weight, conv.bias))
        return F.leaky_relu(h if res is None else h + res, slope)

    def dwsep_unit(self, x: Tensor, conv: DWSepConv3d, norm: nn.LayerNorm, slope: float,
                   res: Tensor | None = None) -> Tensor:
        return self.unit(x, conv.depthwise, conv.pointwise, norm, slope, res)

    def res_conv(self, x: Tensor, block: ResConv3d) -> Tensor:
        """`ResConv3d.forward`."""
        h = self.dwsep_unit(x, block.conv1, block.norm1, block.slope)
        shortcut = (x if block.shortcut is None
                    else pointwise(x, block.shortcut.weight, block.shortcut.bias))
        return self.dwsep_unit(h, block.conv2, block.norm2, block.slope, res=shortcut)

    def squeeze_excite(self, x: Tensor, se: SqueezeExcite) -> Tensor:
        """`SqueezeExcite.forward`."""
        return x * torch.sigmoid(se.fc2(F.relu(se.fc1(x.mean(dim=(0, 1, 2))))))

    def encoder(self, x: Tensor, stage: EncoderStage) -> Tensor:
        return self.res_conv(self.squeeze_excite(x, stage.se), stage.res)

    def aspp(self, x: Tensor, block: ASPP) -> Tensor:
        """`ASPP.forward`."""
        feats = [self.unit(x, None, block.point, block.norms[0], block.slope)]
        feats += [self.dwsep_unit(x, conv, norm, block.slope)
                  for conv, norm in zip(block.atrous, block.norms[1:], strict=True)]
        pooled = F.leaky_relu(block.pool_fc(x.mean(dim=(0, 1, 2))), block.slope)
        feats.append(pooled.expand(*_size(x), pooled.shape[0]))
        return self.unit(torch.cat(feats, dim=-1), None, block.fuse, block.fuse_norm,
                         block.slope)

    def decoder_input(self, gate: Tensor, skip: Tensor, pooled_skip: Tensor,
                      stage: DecoderStage) -> Tensor:
        """A decoder stage's input: the projected, upsampled gate and the attended skip
        (`AttentionGate.forward`, `DecoderStage.forward`)."""
        att = stage.attention
        q = F.relu(pointwise(pooled_skip, att.theta.weight, None)
                   + pointwise(gate, att.phi.weight, att.phi.bias))
        a = torch.sigmoid(pointwise(q, att.psi.weight, att.psi.bias))
        attended = skip * self.upsample(a, _size(skip))
        up = self.upsample(pointwise(gate, stage.project.weight, stage.project.bias),
                           _size(skip))
        return torch.cat([up, attended], dim=-1)

    def decoder(self, gate: Tensor, skip: Tensor, pooled_skip: Tensor,
                stage: DecoderStage) -> Tensor:
        return self.res_conv(self.decoder_input(gate, skip, pooled_skip, stage), stage.res)

    def pool(self, x: Tensor) -> Tensor:
        return max_pool2(x)

    def upsample(self, x: Tensor, size: Size3) -> Tensor:
        return upsample2(x, size)


class FusedBlocks(ChannelsLastBlocks):
    """`ChannelsLastBlocks` with each unit, ResConv3D block, ASPP, SE unit and decoder input in
    the fused kernels (widths multiples of 8; other widths fall back), and the max pooling and
    x2 upsampling in kernels of their own."""

    def unit(self, x: Tensor, dw: nn.Conv3d | None, conv: nn.Conv3d, norm: nn.LayerNorm,
             slope: float, res: Tensor | None = None) -> Tensor:
        if not library.supports(x.shape[-1], conv.out_channels):
            return super().unit(x, dw, conv, norm, slope, res)
        return fused_net.dwsep_unit(x, *_unit_tensors(x.shape[-1], dw, conv, norm), res,
                                    dilation=1 if dw is None else dw.dilation[0], slope=slope,
                                    eps=norm.eps)

    def res_conv(self, x: Tensor, block: ResConv3d) -> Tensor:
        c1, c2 = block.conv1, block.conv2
        co = c1.pointwise.out_channels
        if not library.supports(x.shape[-1], co):
            return super().res_conv(x, block)
        sc = block.shortcut
        return fused_net.res_block(
            x, _unit_tensors(x.shape[-1], c1.depthwise, c1.pointwise, block.norm1),
            _unit_tensors(co, c2.depthwise, c2.pointwise, block.norm2),
            None if sc is None else (sc.weight, sc.bias), slope=block.slope,
            eps=block.norm1.eps)

    def aspp(self, x: Tensor, block: ASPP) -> Tensor:
        ci, co = x.shape[-1], block.point.out_channels
        if not (library.supports(ci, co) and library.supports(block.fuse.in_channels, co)):
            return super().aspp(x, block)
        branches = [_unit_tensors(ci, None, block.point, block.norms[0])]
        branches += [_unit_tensors(ci, conv.depthwise, conv.pointwise, norm)
                     for conv, norm in zip(block.atrous, block.norms[1:], strict=True)]
        dilations = (1, *(conv.depthwise.dilation[0] for conv in block.atrous))
        return fused_net.aspp(x, branches, dilations, (block.pool_fc.weight, block.pool_fc.bias),
                              _unit_tensors(block.fuse.in_channels, None, block.fuse,
                                            block.fuse_norm),
                              slope=block.slope, eps=block.fuse_norm.eps)

    def squeeze_excite(self, x: Tensor, se: SqueezeExcite) -> Tensor:
        return fused_net.squeeze_excite(x, (se.fc1.weight, se.fc1.bias),
                                        (se.fc2.weight, se.fc2.bias))

    def decoder_input(self, gate: Tensor, skip: Tensor, pooled_skip: Tensor,
                      stage: DecoderStage) -> Tensor:
        att = stage.attention
        return fused_net.decoder_input(gate, skip, pooled_skip,
                                       (stage.project.weight, stage.project.bias),
                                       att.theta.weight, (att.phi.weight, att.phi.bias),
                                       (att.psi.weight, att.psi.bias))

    def pool(self, x: Tensor) -> Tensor:
        return fused_net.max_pool2(x)

    def upsample(self, x: Tensor, size: Size3) -> Tensor:
        return fused_net.upsample2(x, size)


def _unit_tensors(cin: int, dw: nn.Conv3d | None, conv: nn.Conv3d,
                  norm: nn.LayerNorm) -> tuple[Tensor | None, Tensor, Tensor, Tensor, Tensor]:
    """(DW weight, conv matrix, conv bias, LN weight, LN bias) as the kernels take them, for
    an input of `cin` channels."""
    return (None if dw is None else dw.weight, weight_matrix(conv.weight, cin), conv.bias,
            norm.weight, norm.bias)


class ChannelsLastNetwork:
    """phi(theta | Z) of `net` (its current parameters) for a fixed Z, on channels-last tensors:
    `FastResUNet3D.forward(z)` computed by `ChannelsLastBlocks`, or by `FusedBlocks` when
    `fused`. A callable with no arguments, as `Objective` takes it."""

    def __init__(self, net: FastResUNet3D, z: Tensor, fused: bool) -> None:
        self.net = net
        self.patches = dense3_patches(z)  # the stem conv of Z as one matmul
        self.blocks = FusedBlocks() if fused else ChannelsLastBlocks()

    def __call__(self) -> Tensor:
        net, blocks = self.net, self.blocks
        x = blocks.unit(self.patches, None, net.stem, net.stem_norm, net.config.negative_slope)
        s1 = blocks.encoder(x, net.enc1)
        p1 = blocks.pool(s1)
        s2 = blocks.encoder(p1, net.enc2)
        p2 = blocks.pool(s2)
        s3 = blocks.encoder(p2, net.enc3)
        p3 = blocks.pool(s3)
        h = blocks.aspp(p3, net.aspp)
        h = blocks.decoder(h, s3, p3, net.dec3)
        h = blocks.decoder(h, s2, p2, net.dec2)
        h = blocks.decoder(h, s1, p1, net.dec1)
        return torch.sigmoid(pointwise(h, net.tail.weight, net.tail.bias))[..., 0]
