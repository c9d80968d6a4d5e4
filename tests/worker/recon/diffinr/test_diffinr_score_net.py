"""The noise predictor's weights file: float16 on disk, rebuilt from the file alone."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import UNet2DModel

from worker.recon.diffinr.score_net import load_weights, save_weights


def test_save_load_round_trip(tiny_net: UNet2DModel, tmp_path: Path) -> None:
    path = tmp_path / "p.safetensors"
    save_weights(tiny_net, path, {"note": [1, 2]})
    net, meta = load_weights(path)
    assert meta == {"note": [1, 2]}
    assert net.config.sample_size == 16 and not any(p.requires_grad for p in net.parameters())
    x, t = torch.randn(3, 1, 16, 16), torch.tensor([0, 500, 999])
    tiny_net.eval()
    with torch.no_grad():
        expected, got = tiny_net(x, t).sample, net(x, t).sample
    assert got.shape == (3, 1, 16, 16)
    torch.testing.assert_close(got, expected, atol=5e-3, rtol=5e-3)  # float16 weights
    # half the bytes of float32 weights, plus a small header
    n = sum(p.numel() for p in net.parameters())
    assert 2 * n <= path.stat().st_size < 2 * n + 64_000
