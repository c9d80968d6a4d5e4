"""The noise predictor ε̂_θ(x_t, t) of the diffusion prior (seed 2, eq. 7): a small
time-conditioned 2D U-Net, and its weights file.

The U-Net is diffusers' `UNet2DModel` (residual blocks with a sinusoidal time embedding; no
self-attention, which at 8 x 8 cost CPU time for no need of ours), sized for CPU training at
32 x 32 on a shared machine (0.64 M parameters). Weights are
stored as float16 safetensors with the network's and the noise schedule's configuration in the
file's metadata, so one file rebuilds the prior.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import UNet2DModel
from safetensors import safe_open
from safetensors.torch import load_file, save_file

RESOLUTION = 32


def score_net(resolution: int = RESOLUTION,
              channels: tuple[int, ...] = (16, 32, 64)) -> UNet2DModel:
    """A fresh ε̂_θ for 1-channel images of `resolution`², one level per entry of `channels`."""
    levels = len(channels)
    return UNet2DModel(
        sample_size=resolution, in_channels=1, out_channels=1, block_out_channels=channels,
        layers_per_block=1, norm_num_groups=8,
        down_block_types=("DownBlock2D",) * levels, up_block_types=("UpBlock2D",) * levels,
    )


def save_weights(net: UNet2DModel, path: Path, meta: dict) -> None:
    """Write `net`'s weights (float16) with its configuration and `meta` (JSON-able) to `path`."""
    tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in net.state_dict().items()}
    save_file(tensors, str(path), metadata={"unet": json.dumps(dict(net.config)),
                                             "meta": json.dumps(meta)})


def load_weights(path: Path) -> tuple[UNet2DModel, dict]:
    """The network stored at `path` (float32, eval mode, frozen) and its `meta` dictionary."""
    with safe_open(str(path), framework="pt") as f:
        header = f.metadata()
    net = UNet2DModel.from_config(json.loads(header["unet"]))
    net.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    net.eval().requires_grad_(False)
    return net, json.loads(header["meta"])
