"""`FlatAdam`: torch's Adam on one flat tensor holding every parameter of the network."""

from __future__ import annotations

import pytest
import torch

from worker.recon.d2ip.cpu.flat_adam import FlatAdam
from worker.recon.d2ip.network import FastResUNet3D, NetConfig, make_input

CONFIG = NetConfig(zero_tail=False)


def _steps(net: FastResUNet3D, opt, n: int) -> list[float]:
    z = make_input(0, (4, 8, 8))
    losses = []
    for _ in range(n):
        opt.zero_grad(set_to_none=True)
        loss = (net(z) - 0.3).square().mean()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def _quadratic_steps(net: FastResUNet3D, opt, n: int) -> None:
    # elementwise gradients (c + 0.1 p): the same whatever the parameters' memory layout (the
    # network's own convolutions may sum in another order for differently aligned weights, and
    # Adam's first steps turn such rounding into +-lr)
    gen = torch.Generator().manual_seed(7)
    targets = [torch.randn(p.shape, generator=gen) for p in net.parameters()]
    for _ in range(n):
        opt.zero_grad(set_to_none=True)
        sum(((p * c).sum() + 0.05 * p.square().sum()
             for p, c in zip(net.parameters(), targets, strict=True)), torch.tensor(0.0)).backward()
        opt.step()


def test_same_updates_as_torch_adam() -> None:
    ref, flat = FastResUNet3D(CONFIG, seed=1), FastResUNet3D(CONFIG, seed=1)
    _quadratic_steps(ref, torch.optim.Adam(ref.parameters(), lr=1e-2, fused=True), 5)
    _quadratic_steps(flat, FlatAdam(flat, lr=1e-2), 5)
    start = FastResUNet3D(CONFIG, seed=1)
    for (name, a), (_, b), (_, c) in zip(ref.named_parameters(), flat.named_parameters(),
                                         start.named_parameters(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7, msg=name)
        assert not torch.equal(a, c)  # it moved


def test_parameters_and_gradients_are_views_of_the_flat_tensors() -> None:
    net = FastResUNet3D(CONFIG, seed=1)
    before = [p.detach().clone() for p in net.parameters()]
    opt = FlatAdam(net, lr=1e-2)
    for p, b in zip(net.parameters(), before, strict=True):
        assert torch.equal(p, b)  # flattening keeps the values
    _steps(net, opt, 1)
    assert opt.flat.grad is not None and bool(opt.flat.grad.abs().sum() > 0)
    offset = 0
    for p in net.parameters():  # the step moved the parameters through the flat tensor
        assert p.data_ptr() == opt.flat.data_ptr() + 4 * offset
        assert p.grad is not None and p.grad.data_ptr() == opt.flat.grad.data_ptr() + 4 * offset
        offset += p.numel()
    opt.zero_grad()
    assert not opt.flat.grad.any()


def test_moments_round_trip_continues_the_run() -> None:
    a, b = FastResUNet3D(CONFIG, seed=2), FastResUNet3D(CONFIG, seed=2)
    opt_a = FlatAdam(a, lr=1e-2)
    assert opt_a.moments() == {}
    _steps(a, opt_a, 3)
    moments = {n: {k: v.clone() for k, v in m.items()} for n, m in opt_a.moments().items()}
    assert moments["tail.weight"]["exp_avg"].shape == a.tail.weight.shape
    b.load_state_dict(a.state_dict())
    opt_b = FlatAdam(b, lr=1e-2)
    opt_b.load_moments(moments)
    assert _steps(b, opt_b, 2) == _steps(a, opt_a, 2)


def test_load_moments_rejects_incomplete_or_mixed_state() -> None:
    net = FastResUNet3D(CONFIG, seed=2)
    opt = FlatAdam(net, lr=1e-2)
    _steps(net, opt, 1)
    moments = dict(opt.moments())
    moments.pop("tail.bias")
    with pytest.raises(ValueError, match="exactly"):
        opt.load_moments(moments)
    moments = dict(opt.moments())
    moments["tail.bias"] = {**moments["tail.bias"], "step": torch.tensor(7.0)}
    with pytest.raises(ValueError, match="step counts"):
        opt.load_moments(moments)
