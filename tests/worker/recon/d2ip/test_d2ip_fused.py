"""Fused CPU kernels (`fused.py`, `kernels/dwsep_unit.cpp`) against the channels-last torch ops."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F

from worker.recon.d2ip import fused, ops_cl
from worker.recon.d2ip.loss import MaskGeometry, spatial_tv, temporal_tv, temporal_weights
from worker.recon.d2ip.network import FastResUNet3D, NetConfig, make_input
from worker.recon.d2ip.objective import Objective
from worker.recon.d2ip.synthetic import make_problem

HAVE_COMPILER = shutil.which("g++") is not None or shutil.which("c++") is not None
needs_kernels = pytest.mark.skipif(not HAVE_COMPILER, reason="no C++ compiler")


def test_kernels_build_wherever_there_is_a_compiler() -> None:
    # a compiler and no kernels would silently drop the fast path: fail loudly instead
    assert fused.available() == HAVE_COMPILER


def composed(x, dw, pw, pb, lg, lb, res, dilation, slope, act):
    h = ops_cl.pointwise(x if dw is None else ops_cl.depthwise3(x, dw, dilation), pw, pb)
    h = F.layer_norm(h, (pw.shape[0],), lg, lb, 1e-5)
    if res is not None:
        h = h + res
    return F.leaky_relu(h, slope) if act else h


@needs_kernels
@pytest.mark.parametrize(("grid", "cin", "cout", "dilation", "with_res", "act", "with_dw"), [
    ((16, 32, 32), 8, 8, 1, True, True, True),
    ((8, 16, 16), 16, 32, 1, False, True, True),
    ((7, 11, 13), 8, 16, 2, True, False, True),
    ((2, 4, 4), 32, 64, 3, False, True, True),
    ((3, 5, 4), 24, 40, 1, True, True, True),  # widths without a compiled specialisation
    ((5, 6, 7), 32, 8, 1, False, True, False),  # no DW: the stem, ASPP's 1x1 branch
    ((2, 4, 4), 320, 64, 1, True, True, False),
])
def test_unit_equals_composed_ops(grid, cin, cout, dilation, with_res, act, with_dw) -> None:
    gen = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=gen).requires_grad_()

    x, dw, pw = rand(*grid, cin), rand(cin, 1, 3, 3, 3), rand(cout, cin, 1, 1, 1)
    pb, lg, lb = rand(cout), rand(cout), rand(cout)
    res = rand(*grid, cout) if with_res else None
    inputs = [x, pw, pb, lg, lb] + ([dw] if with_dw else []) + ([res] if with_res else [])
    dw = dw if with_dw else None
    g = torch.randn(*grid, cout, generator=gen)

    ref = composed(x, dw, pw, pb, lg, lb, res, dilation, 0.2, act)
    out = fused.dwsep_unit(x, dw, pw, pb, lg, lb, res, dilation=dilation, slope=0.2, act=act)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    for a, b in zip(torch.autograd.grad(ref, inputs, g), torch.autograd.grad(out, inputs, g),
                    strict=True):
        assert float((b - a).norm()) <= 1e-5 * float(a.norm()) + 1e-7


@needs_kernels
def test_unit_rejects_what_it_cannot_run() -> None:
    x = torch.zeros(2, 3, 4, 12)
    w = [torch.zeros(12, 1, 3, 3, 3), torch.zeros(8, 12), torch.zeros(8), torch.ones(8),
         torch.zeros(8)]
    with pytest.raises(ValueError, match="multiples of 8"):
        fused.dwsep_unit(x, *w)
    with pytest.raises(ValueError, match="float32 CPU"):
        fused.dwsep_unit(torch.zeros(2, 3, 4, 8, dtype=torch.float64),
                         *[t[:8] if t.shape[0] == 12 else t for t in w])
    assert fused.supports(8, 64) and not fused.supports(8, 12) and not fused.supports(520, 8)


@needs_kernels
@pytest.mark.parametrize("config", [NetConfig(zero_tail=False),
                                    NetConfig(stem_width=4, widths=(4, 8, 12), zero_tail=False)])
def test_fused_network_equals_reference_path(config) -> None:
    # the second config has widths the kernels do not take: those blocks fall back to torch ops
    grid = (8, 12, 12)
    net = FastResUNet3D(config, seed=1)
    z = make_input(0, grid)
    ref = net(z)
    out = net.forward_cl(ops_cl.dense3_patches(z), fused=True)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    g = torch.randn(grid, generator=torch.Generator().manual_seed(5))
    params = list(net.parameters())
    grads_ref = torch.autograd.grad((ref * g).sum(), params)
    grads = torch.autograd.grad((out * g).sum(), params)
    # float32 sums in another order; a few tensors (an SE unit's input layer) get gradients
    # 1e-4 times smaller than the rest, where cancellation leaves only a relative 1e-3, so the
    # floor is relative to the whole gradient (the eager and channels-last paths differ alike)
    floor = 1e-6 * float(torch.cat([a.flatten() for a in grads_ref]).norm())
    for a, b in zip(grads_ref, grads, strict=True):
        assert float((b - a).norm()) <= 1e-4 * float(a.norm()) + floor


@needs_kernels
def test_fused_kernels_are_deterministic() -> None:
    grid = (8, 16, 16)
    net = FastResUNet3D(NetConfig(zero_tail=False), seed=2)
    patches = ops_cl.dense3_patches(make_input(0, grid))
    runs = []
    for _ in range(2):
        out = net.forward_cl(patches, fused=True)
        runs.append([out, *torch.autograd.grad(out.square().sum(), list(net.parameters()))])
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)


@needs_kernels
def test_objective_uses_the_kernels_by_default_on_cpu() -> None:
    problem = make_problem((8, 16, 16), n_meas=64, seed=0)
    net = FastResUNet3D(seed=0)
    z = make_input(0, (8, 16, 16))
    assert Objective(net, z, problem.jacobian, problem.mask).fused
    assert not Objective(net, z, problem.jacobian, problem.mask, fused=False).fused
    assert not Objective(net, z, problem.jacobian, problem.mask, fast=False).fused
    with pytest.raises(ValueError, match="fast path"):
        Objective(net, z, problem.jacobian, problem.mask, fast=False, fused=True)


def test_switched_off_by_environment(tmp_path) -> None:
    env = {**os.environ, "EITMON_FUSED": "0", "EITMON_CACHE_DIR": str(tmp_path)}
    code = "from worker.recon.d2ip import fused; print(fused.available())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
    assert not (tmp_path / "kernels").exists()


@needs_kernels
def test_library_is_built_once_into_the_cache(tmp_path) -> None:
    env = {**os.environ, "EITMON_CACHE_DIR": str(tmp_path)}
    code = "from worker.recon.d2ip import fused; print(fused.available())"
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, check=True)
        assert out.stdout.strip() == "True"
    built = list((tmp_path / "kernels").iterdir())
    assert len(built) == 1 and built[0].suffix == ".so"
    # a build for other sources replaces it: stale libraries do not pile up in the cache
    stale = built[0].with_name("d2ip-0000000000000000.so")
    built[0].rename(stale)
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)
    assert [p.name for p in (tmp_path / "kernels").iterdir()] == [built[0].name]


def test_broken_compiler_falls_back_with_a_warning(tmp_path) -> None:
    fake = tmp_path / "g++"
    fake.write_text("#!/bin/sh\necho 'fake compiler 1.0'\n[ \"$1\" = --version ] || exit 1\n")
    fake.chmod(0o755)
    env = {**os.environ, "CXX": str(fake), "EITMON_CACHE_DIR": str(tmp_path / "cache")}
    code = ("import logging; logging.basicConfig(); from worker.recon.d2ip import fused; "
            "print(fused.available())")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
    assert "channels-last path" in out.stderr


@needs_kernels
@pytest.mark.parametrize(("grid", "size", "channels"), [
    ((8, 16, 16), (16, 32, 32), 8), ((4, 6, 7), (7, 12, 13), 3), ((1, 2, 1), (2, 3, 1), 1),
])
def test_upsample_equals_aten(grid, size, channels) -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(*grid, channels, generator=gen, requires_grad=True)
    g = torch.randn(*size, channels, generator=gen)
    ref, out = ops_cl.upsample2(x, size), fused.upsample2(x, size)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(torch.autograd.grad(out, x, g)[0],
                               torch.autograd.grad(ref, x, g)[0], rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="cannot crop"):
        fused.upsample2(x.detach(), (2 * grid[0] + 1, *size[1:]))


@needs_kernels
@pytest.mark.parametrize(("grid", "cin", "cout"), [
    ((16, 32, 32), 16, 8),  # the decoder's first block: a 1x1x1 shortcut
    ((8, 16, 16), 16, 16),  # identity shortcut
    ((3, 5, 4), 24, 40),  # widths without a compiled specialisation
])
def test_res_block_equals_composed_ops(grid, cin, cout) -> None:
    gen = torch.Generator().manual_seed(4)

    def rand(*shape):
        return torch.randn(*shape, generator=gen).requires_grad_()

    x = rand(*grid, cin)
    unit1 = (rand(cin, 1, 3, 3, 3), rand(cout, cin, 1, 1, 1), rand(cout), rand(cout), rand(cout))
    unit2 = (rand(cout, 1, 3, 3, 3), rand(cout, cout, 1, 1, 1), rand(cout), rand(cout),
             rand(cout))
    shortcut = (rand(cout, cin, 1, 1, 1), rand(cout)) if cin != cout else None
    inputs = [x, *unit1, *unit2, *(shortcut or ())]
    g = torch.randn(*grid, cout, generator=gen)
    h = composed(x, *unit1, None, 1, 0.2, True)
    res = x if shortcut is None else ops_cl.pointwise(x, *shortcut)
    ref = composed(h, *unit2, res, 1, 0.2, True)
    out = fused.res_block(x, unit1, unit2, shortcut)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    for a, b in zip(torch.autograd.grad(ref, inputs, g), torch.autograd.grad(out, inputs, g),
                    strict=True):
        assert float((b - a).norm()) <= 1e-5 * float(a.norm()) + 1e-7
    with pytest.raises(ValueError, match="shortcut"):
        fused.res_block(torch.zeros(*grid, cin + 8), unit1, unit2)


def _block_and_grads(x, *params):
    unit1, unit2, shortcut = params[:5], params[5:10], params[10:]
    out = fused.res_block(x, unit1, unit2, shortcut)
    loss = (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum()
    return [out, *torch.autograd.grad(loss, [x, *params])]


@needs_kernels
def test_results_do_not_depend_on_the_thread_count() -> None:
    gen = torch.Generator().manual_seed(3)
    shapes = [(9, 6, 7, 16), (16, 1, 3, 3, 3), (8, 16), (8,), (8,), (8,),
              (8, 1, 3, 3, 3), (8, 8), (8,), (8,), (8,), (8, 16), (8,)]
    args = [torch.randn(*s, generator=gen).requires_grad_() for s in shapes]
    a = torch.randn(37, 1001, generator=gen)
    v = torch.randn(1001, generator=gen, requires_grad=True)
    runs = []
    before = fused.set_threads(1)
    try:
        for threads in (1, 2, 3):
            fused.set_threads(threads)
            y = fused.matvec(a, v)
            runs.append([*_block_and_grads(*args), y, *torch.autograd.grad(y.square().sum(), v)])
    finally:
        fused.set_threads(before)
    for other in runs[1:]:
        for x, y in zip(runs[0], other, strict=True):
            assert torch.equal(x, y)


def test_thread_setting() -> None:
    before = fused.set_threads(3)
    try:
        assert fused.threads() == 3
        assert fused.set_threads(None) == 3
        assert 1 <= fused.threads() <= min(len(os.sched_getaffinity(0)), fused.MAX_THREADS)
        with pytest.raises(ValueError, match="at least 1"):
            fused.set_threads(0)
    finally:
        fused.set_threads(before)


def test_cpu_quota_of_the_container(tmp_path) -> None:
    assert fused._cgroup_cpus(tmp_path) is None  # no cgroup files: unknown
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert fused._cgroup_cpus(tmp_path) is None
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # a 1.5 CPU limit (v2)
    assert fused._cgroup_cpus(tmp_path) == 1.5
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert fused._cgroup_cpus(tmp_path) is None
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")  # v1
    assert fused._cgroup_cpus(tmp_path) == 3.0


@needs_kernels
def test_kernels_run_in_a_forked_child() -> None:
    # the parent's pool threads do not exist in a forked child: it must not wait for them
    fused.set_threads(2)
    try:
        x = torch.randn(4, 5, 6, 8)
        w = [torch.randn(8, 1, 3, 3, 3), torch.randn(8, 8), torch.zeros(8), torch.ones(8),
             torch.zeros(8)]
        expected = fused.dwsep_unit(x, *w)  # the parent's pool is running now
        pid = os.fork()
        if pid == 0:  # child: exit status 0 only when it gets the parent's result
            code = 1
            try:
                code = 0 if torch.equal(fused.dwsep_unit(x, *w), expected) else 1
            finally:
                os._exit(code)
        for _ in range(600):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.05)
        else:
            os.kill(pid, 9)
            pytest.fail("the kernels hung in a forked child")
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        fused.set_threads(None)


@needs_kernels
def test_matvec_equals_matmul() -> None:
    gen = torch.Generator().manual_seed(4)
    for m, n in ((464, 11008), (5, 3), (13, 1027)):  # row and column tails
        a = torch.randn(m, n, generator=gen)
        x = torch.randn(n, generator=gen, requires_grad=True)
        g = torch.randn(m, generator=gen)
        y = fused.matvec(a, x)
        (gx,) = torch.autograd.grad(y, x, g)
        # against float64, within float32 rounding of the sums of |products|
        a64, x64, g64 = a.double(), x.detach().double(), g.double()
        assert ((y.double() - a64 @ x64).abs() <= 1e-6 * (a64.abs() @ x64.abs())).all()
        assert ((gx.double() - a64.T @ g64).abs() <= 1e-6 * (a64.abs().T @ g64.abs())).all()
    with pytest.raises(ValueError, match="contiguous"):
        fused.matvec(a.T, torch.zeros(m))


@needs_kernels
@pytest.mark.parametrize("filled", [0, 3, 10])
def test_tv_prior_equals_torch_terms(filled) -> None:
    problem = make_problem((8, 16, 16), n_meas=64, seed=0)
    geom = MaskGeometry.from_mask(problem.mask)
    gen = torch.Generator().manual_seed(5)
    previous = 0.1 * torch.randn(10, geom.n_inside, generator=gen)
    weights = temporal_weights(filled, 10)
    vol = (0.1 * torch.randn(8, 16, 16, generator=gen)).requires_grad_()
    ref = (1.0 * spatial_tv(vol, geom, 1e-6)
           + 0.1 * temporal_tv(vol.reshape(-1)[geom.index], previous, weights, 1e-6))
    out = fused.tv_prior(vol, geom, previous, weights, 1e-6, 1.0, 0.1)
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=0)
    (g_ref,) = torch.autograd.grad(3 * ref, vol)
    (g_out,) = torch.autograd.grad(3 * out, vol)
    torch.testing.assert_close(g_out, g_ref, rtol=1e-5, atol=1e-9)


@needs_kernels
@pytest.mark.parametrize("shape", [(16, 32, 32, 8), (7, 5, 9, 16), (3, 3, 3, 3)])
def test_max_pool_equals_aten(shape) -> None:
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(*shape, generator=gen)
    x[0, 0, 1] = x[0, 0, 0]  # a tie: the first maximum wins, as in ATen
    x[-1, -1, -1, 0] = float("nan")
    x.requires_grad_()
    ref, out = ops_cl.max_pool2(x), fused.max_pool2(x)
    torch.testing.assert_close(out, ref, rtol=0, atol=0, equal_nan=True)
    g = torch.randn(ref.shape, generator=gen)
    assert torch.equal(torch.autograd.grad(out, x, g)[0], torch.autograd.grad(ref, x, g)[0])
