"""3D-FastResUNet, the implicit image prior phi(theta | Z) of D2IP (paper section III.D, Fig. 3).

stem -> 3 x (SE unit + ResConv3D), max-pooling between stages -> ASPP bottleneck -> 3 x (attention
unit + trilinear interpolation + ResConv3D fusing the encoder skip) -> tail Conv3D + sigmoid.
ResConv3D is built from depthwise-separable convolutions (depthwise 3x3x3 + pointwise 1x1x1),
LayerNorm over channels, LeakyReLU and a residual connection. Kaiming initialisation (III.B).

Volumes are (P, R, C) (see `service.contract.grid`); activations are (1, Ch, P, R, C) tensors
and each block's `forward` is its math in plain torch: this is the reference. The CPU's faster
evaluations of the same function from the same parameters (channels-last tensors, fused C++
kernels) live in `worker.recon.d2ip.cpu` and read these modules; nothing here depends on them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Size3 = tuple[int, int, int]


@dataclass(frozen=True)
class NetConfig:
    """Widths of 3D-FastResUNet (the paper does not give them; these are our defaults)."""

    in_channels: int = 1  # channels of the fixed noise Z (the paper's Z is one volume)
    stem_width: int = 8
    widths: tuple[int, int, int] = (8, 16, 32)  # encoder stages at 1, 1/2, 1/4 resolution
    bottleneck_width: int = 64  # ASPP at 1/8 resolution (nearly free: 2 x 4 x 4 voxels)
    se_reduction: int = 4
    aspp_dilations: tuple[int, ...] = (1, 2, 3)
    negative_slope: float = 0.2  # LeakyReLU, as in the original DIP
    zero_tail: bool = True  # tail conv starts at 0: phi(theta^(0) | Z) = 0.5, "no change"


def make_input(seed: int, shape: tuple[int, int, int], channels: int = 1) -> Tensor:
    """The fixed input noise Z ~ U(0, 1), shape (1, channels, P, R, C), from a recorded seed."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand((1, channels, *shape), generator=gen, dtype=torch.float32)


def channel_norm(norm: nn.LayerNorm, x: Tensor) -> Tensor:
    """LayerNorm over the channels of each voxel of a (1, Ch, P, R, C) tensor."""
    return norm(x.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)


def unit(x: Tensor, conv: nn.Module, norm: nn.LayerNorm, slope: float,
         res: Tensor | None = None) -> Tensor:
    """LeakyReLU(LN(conv(x)) + res): the unit every block is built from (conv a `DWSepConv3d`
    or a plain Conv3d)."""
    h = channel_norm(norm, conv(x))
    return F.leaky_relu(h if res is None else h + res, slope)


def max_pool2(x: Tensor) -> Tensor:
    """2x2x2 max pooling with ceil mode (an odd axis keeps its last voxel alone)."""
    return F.max_pool3d(x, 2, ceil_mode=True)


def upsample2(x: Tensor, size: Size3) -> Tensor:
    """Trilinear x2 upsampling (align_corners=False), cropped to `size` (2n or 2n - 1 per axis)."""
    y = F.interpolate(x, scale_factor=2.0, mode="trilinear", align_corners=False)
    return y[:, :, :size[0], :size[1], :size[2]]


def grid_size(x: Tensor) -> Size3:
    """(P, R, C) of a (1, Ch, P, R, C) tensor."""
    return tuple(x.shape[2:])  # type: ignore[return-value]


class DWSepConv3d(nn.Module):
    """Depthwise 3x3x3 (groups = Cin, optional dilation) + pointwise 1x1x1 convolution.

    The depthwise conv has no bias: a per-channel constant would pass linearly through the
    pointwise conv and is absorbed by its bias. Blocks apply it through `unit`, together with
    the LayerNorm and activation that always follow it.
    """

    def __init__(self, cin: int, cout: int, dilation: int = 1) -> None:
        super().__init__()
        self.depthwise = nn.Conv3d(cin, cin, 3, padding=dilation, dilation=dilation, groups=cin,
                                   bias=False)
        self.pointwise = nn.Conv3d(cin, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise(self.depthwise(x))


class ResConv3d(nn.Module):
    """act(LN(DWSep(act(LN(DWSep(x))))) + shortcut(x)); shortcut is 1x1x1 when widths differ."""

    def __init__(self, cin: int, cout: int, slope: float) -> None:
        super().__init__()
        self.conv1 = DWSepConv3d(cin, cout)
        self.norm1 = nn.LayerNorm(cout)
        self.conv2 = DWSepConv3d(cout, cout)
        self.norm2 = nn.LayerNorm(cout)
        self.shortcut = nn.Conv3d(cin, cout, 1) if cin != cout else None
        self.slope = slope

    def forward(self, x: Tensor) -> Tensor:
        h = unit(x, self.conv1, self.norm1, self.slope)
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return unit(h, self.conv2, self.norm2, self.slope, res=shortcut)


class SqueezeExcite(nn.Module):
    """Squeeze-and-Excitation unit (Hu et al.): channel gates from the global mean."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: Tensor) -> Tensor:
        """x times sigmoid(fc2(relu(fc1(the channels' means)))), per channel."""
        gates = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=(0, 2, 3, 4))))))
        return x * gates.view(1, -1, 1, 1, 1)


class EncoderStage(nn.Module):
    """One SE unit + ResConv3D pair."""

    def __init__(self, cin: int, cout: int, cfg: NetConfig) -> None:
        super().__init__()
        self.se = SqueezeExcite(cin, cfg.se_reduction)
        self.res = ResConv3d(cin, cout, cfg.negative_slope)

    def forward(self, x: Tensor) -> Tensor:
        return self.res(self.se(x))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1x1, dilated DWSep branches, global pooling; 1x1 fuse."""

    def __init__(self, cin: int, cout: int, dilations: tuple[int, ...], slope: float) -> None:
        super().__init__()
        self.point = nn.Conv3d(cin, cout, 1)
        self.atrous = nn.ModuleList(DWSepConv3d(cin, cout, d) for d in dilations)
        self.norms = nn.ModuleList(nn.LayerNorm(cout) for _ in range(1 + len(dilations)))
        self.pool_fc = nn.Linear(cin, cout)
        self.fuse = nn.Conv3d((2 + len(dilations)) * cout, cout, 1)
        self.fuse_norm = nn.LayerNorm(cout)
        self.slope = slope

    def forward(self, x: Tensor) -> Tensor:
        """The 1x1x1 and dilated branch units of x, the pooled branch, the fuse unit."""
        feats = [unit(x, self.point, self.norms[0], self.slope)]
        feats += [unit(x, conv, norm, self.slope)
                  for conv, norm in zip(self.atrous, self.norms[1:], strict=True)]
        pooled = F.leaky_relu(self.pool_fc(x.mean(dim=(0, 2, 3, 4))), self.slope)
        feats.append(pooled.view(1, -1, 1, 1, 1).expand(1, pooled.shape[0], *grid_size(x)))
        return unit(torch.cat(feats, dim=1), self.fuse, self.fuse_norm, self.slope)


class AttentionGate(nn.Module):
    """Additive attention gate on the skip (Attention U-Net), evaluated at the gate's resolution.

    q = relu(W_x pool(skip) + W_g g); a = sigmoid(psi(q)), interpolated to the skip's size.
    pool(skip) is the encoder's own pooled output (the next stage's input), not recomputed.
    """

    def __init__(self, c_skip: int, c_gate: int) -> None:
        super().__init__()
        inter = max(c_skip // 2, 4)
        self.theta = nn.Conv3d(c_skip, inter, 1, bias=False)
        self.phi = nn.Conv3d(c_gate, inter, 1)
        self.psi = nn.Conv3d(inter, 1, 1)

    def forward(self, skip: Tensor, pooled_skip: Tensor, gate: Tensor) -> Tensor:
        q = F.relu(self.theta(pooled_skip) + self.phi(gate))
        return skip * upsample2(torch.sigmoid(self.psi(q)), grid_size(skip))


class DecoderStage(nn.Module):
    """Attention unit, trilinear interpolation to the skip's size, ResConv3D fusing the skip.

    The gate features are first projected to the skip's width by a 1x1x1 conv at the coarse
    resolution (the channel-halving "up-convolution" of U-Net), so that the full-resolution
    ResConv3D sees 2 x skip width channels instead of gate + skip widths.
    """

    def __init__(self, c_gate: int, c_skip: int, cfg: NetConfig) -> None:
        super().__init__()
        self.attention = AttentionGate(c_skip, c_gate)
        self.project = nn.Conv3d(c_gate, c_skip, 1)
        self.res = ResConv3d(2 * c_skip, c_skip, cfg.negative_slope)

    def forward(self, gate: Tensor, skip: Tensor, pooled_skip: Tensor) -> Tensor:
        attended = self.attention(skip, pooled_skip, gate)
        up = upsample2(self.project(gate), grid_size(skip))
        return self.res(torch.cat([up, attended], dim=1))


class FastResUNet3D(nn.Module):
    """phi(theta | Z): (1, Cin, P, R, C) noise -> (P, R, C) in (0, 1) (eq. 3 before gamma)."""

    def __init__(self, config: NetConfig | None = None, seed: int = 0) -> None:
        super().__init__()
        cfg = config or NetConfig()
        self.config = cfg
        w1, w2, w3 = cfg.widths
        self.stem = nn.Conv3d(cfg.in_channels, cfg.stem_width, 3, padding=1)
        self.stem_norm = nn.LayerNorm(cfg.stem_width)
        self.enc1 = EncoderStage(cfg.stem_width, w1, cfg)
        self.enc2 = EncoderStage(w1, w2, cfg)
        self.enc3 = EncoderStage(w2, w3, cfg)
        self.aspp = ASPP(w3, cfg.bottleneck_width, cfg.aspp_dilations, cfg.negative_slope)
        self.dec3 = DecoderStage(cfg.bottleneck_width, w3, cfg)
        self.dec2 = DecoderStage(w3, w2, cfg)
        self.dec1 = DecoderStage(w2, w1, cfg)
        self.tail = nn.Conv3d(w1, 1, 1)
        kaiming_init(self, cfg.negative_slope, seed)
        if cfg.zero_tail:
            nn.init.zeros_(self.tail.weight)

    def forward(self, z: Tensor) -> Tensor:
        """phi(theta | Z): Z (1, Cin, P, R, C) -> sigmoid output (P, R, C)."""
        x = unit(z, self.stem, self.stem_norm, self.config.negative_slope)
        s1 = self.enc1(x)
        p1 = max_pool2(s1)
        s2 = self.enc2(p1)
        p2 = max_pool2(s2)
        s3 = self.enc3(p2)
        p3 = max_pool2(s3)
        h = self.aspp(p3)
        h = self.dec3(h, s3, p3)
        h = self.dec2(h, s2, p2)
        h = self.dec1(h, s1, p1)
        return torch.sigmoid(self.tail(h))[0, 0]


def kaiming_init(net: nn.Module, slope: float, seed: int) -> None:
    """Kaiming-normal (fan-in, LeakyReLU gain) weights, zero biases, from a private generator."""
    gen = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, (nn.Conv3d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, a=slope, nonlinearity="leaky_relu", generator=gen)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def count_parameters(net: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)
