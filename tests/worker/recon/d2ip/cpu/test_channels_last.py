"""`cpu/channels_last.py` and `CpuExecution` against the reference: the contract between the
paper modules and the CPU's faster paths (network, objective, a whole frame)."""

from __future__ import annotations

import pytest
import torch

from worker.bench.synthetic import make_problem
from worker.recon.d2ip.cpu import CpuExecution, library
from worker.recon.d2ip.cpu.channels_last import ChannelsLastNetwork
from worker.recon.d2ip.execution import ReferenceExecution
from worker.recon.d2ip.network import FastResUNet3D, NetConfig, make_input
from worker.recon.d2ip.optimise import FixedIterations, optimise_frame

STRATEGIES = [CpuExecution(fused=False)] + ([CpuExecution(fused=True)] if library.available()
                                            else [])


@pytest.mark.parametrize("grid", [(8, 12, 12), (7, 11, 13), (3, 5, 4)])
def test_channels_last_network_equals_the_reference(grid) -> None:
    net = FastResUNet3D(NetConfig(in_channels=2, zero_tail=False), seed=1)
    z = make_input(0, grid, channels=2)
    ref = net(z)
    fast = ChannelsLastNetwork(net, z, fused=False)()
    assert ref.shape == fast.shape == grid
    assert 0.0 < float(ref.detach().min()) and float(ref.detach().max()) < 1.0
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-5)

    g = torch.randn(grid, generator=torch.Generator().manual_seed(5))
    grads_ref = torch.autograd.grad((ref * g).sum(), list(net.parameters()))
    grads_fast = torch.autograd.grad((fast * g).sum(), list(net.parameters()))
    for a, b in zip(grads_ref, grads_fast, strict=True):  # float32 sums in another order
        assert float((b - a).norm()) <= 1e-4 * float(a.norm()) + 1e-7



@pytest.mark.parametrize("fast", STRATEGIES, ids=lambda e: e.name)
def test_objective_and_a_frame_equal_the_reference(fast: CpuExecution) -> None:
    grid = (8, 12, 12)
    problem = make_problem(grid, n_meas=64, seed=3)
    results = []
    for execution in (ReferenceExecution(), fast):
        net = FastResUNet3D(NetConfig(zero_tail=False), seed=3)
        obj = execution.objective(net, make_input(3, grid), problem.jacobian, problem.mask)
        window = obj.new_window()
        window.push(torch.full((int(problem.mask.sum()),), -0.1))
        terms = obj(problem.dv, window)
        grads = torch.autograd.grad(terms.total, list(net.parameters()))
        frame = optimise_frame(obj, execution.optimizer(net, 1e-3), problem.dv, window,
                               FixedIterations(5), hook=execution.hook)
        results.append((terms, grads, frame))
    (ref, ref_grads, ref_frame), (out, grads, frame) = results
    torch.testing.assert_close(out.total, ref.total, rtol=1e-5, atol=0)
    torch.testing.assert_close(out.data, ref.data, rtol=1e-5, atol=0)
    floor = 1e-6 * float(torch.cat([g.flatten() for g in ref_grads]).norm())
    for a, b in zip(ref_grads, grads, strict=True):
        assert float((b - a).norm()) <= 1e-4 * float(a.norm()) + floor
    assert frame.loss_history == pytest.approx(ref_frame.loss_history, rel=1e-4)
    torch.testing.assert_close(frame.values, ref_frame.values, rtol=0, atol=1e-4)
