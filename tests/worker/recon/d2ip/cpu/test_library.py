"""`cpu/library.py`: building and loading the kernels, their threads, and the fused network as a
whole against the reference network."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest
import torch

from worker.recon.d2ip.cpu import CpuExecution, execution_for, fused_loss, fused_net, library
from worker.recon.d2ip.cpu.channels_last import ChannelsLastNetwork
from worker.recon.d2ip.cpu.flat_adam import FlatAdam
from worker.recon.d2ip.cpu.fused_loss import FusedDataTerm, FusedTV4D
from worker.recon.d2ip.cpu.thread_tuner import ThreadTuner
from worker.recon.d2ip.execution import ReferenceExecution
from worker.recon.d2ip.network import FastResUNet3D, NetConfig, make_input

HAVE_COMPILER = shutil.which("g++") is not None or shutil.which("c++") is not None
needs_kernels = pytest.mark.skipif(not HAVE_COMPILER, reason="no C++ compiler")


def test_kernels_build_wherever_there_is_a_compiler() -> None:
    # a compiler and no kernels would silently drop the fast path: fail loudly instead
    assert library.available() == HAVE_COMPILER


@needs_kernels
@pytest.mark.parametrize("config", [NetConfig(zero_tail=False),
                                    NetConfig(stem_width=4, widths=(4, 8, 12), zero_tail=False)])
def test_fused_network_equals_reference_path(config) -> None:
    # the second config has widths the kernels do not take: those blocks fall back to torch ops
    grid = (8, 12, 12)
    net = FastResUNet3D(config, seed=1)
    z = make_input(0, grid)
    ref = net(z)
    out = ChannelsLastNetwork(net, z, fused=True)()
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
    phi = ChannelsLastNetwork(net, make_input(0, grid), fused=True)
    runs = []
    for _ in range(2):
        out = phi()
        runs.append([out, *torch.autograd.grad(out.square().sum(), list(net.parameters()))])
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)


@needs_kernels
def test_the_cpu_strategy_uses_the_kernels_by_default() -> None:
    fused_cpu = execution_for(torch.device("cpu"))
    assert isinstance(fused_cpu, CpuExecution) and fused_cpu.fused
    assert isinstance(fused_cpu.hook, ThreadTuner)
    net = FastResUNet3D(seed=0)
    assert isinstance(fused_cpu.optimizer(net, 1e-3), FlatAdam)
    obj = fused_cpu.objective(net, make_input(0, (8, 16, 16)), *_problem())
    assert isinstance(obj.data, FusedDataTerm) and isinstance(obj.prior, FusedTV4D)
    plain = CpuExecution(fused=False)
    assert not plain.fused and plain.hook is None
    assert type(plain.objective(net, make_input(0, (8, 16, 16)), *_problem()).prior).__name__ \
        == "TV4D"
    assert type(execution_for(torch.device("meta"))) is ReferenceExecution


def _problem() -> tuple[torch.Tensor, torch.Tensor]:
    from worker.bench.synthetic import make_problem

    problem = make_problem((8, 16, 16), n_meas=64, seed=0)
    return problem.jacobian, problem.mask


@pytest.mark.parametrize("setting", ["0", "false"])
def test_switched_off_by_environment(tmp_path, setting: str) -> None:
    """`EITMON_FUSED` is read by `EngineSettings`, so any boolean spelling works."""
    env = {**os.environ, "EITMON_FUSED": setting, "EITMON_CACHE_DIR": str(tmp_path)}
    code = "from worker.recon.d2ip.cpu import library; print(library.available())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
    assert not (tmp_path / "kernels").exists()


@needs_kernels
def test_library_is_built_once_into_the_cache(tmp_path) -> None:
    env = {**os.environ, "EITMON_CACHE_DIR": str(tmp_path)}
    code = "from worker.recon.d2ip.cpu import library; print(library.available())"
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


def test_build_writes_the_library_atomically_and_durably(
        tmp_path, monkeypatch: pytest.MonkeyPatch, fsynced: list[str]) -> None:
    """The build goes through `storage.write_atomic` (fsynced, nothing left beside it) under the
    cache root of `EngineSettings`, keyed by `storage.content_key`."""
    fake = tmp_path / "g++"
    fake.write_text("#!/bin/sh\n[ \"$1\" = --version ] && { echo 'fake 1.0'; exit 0; }\n"
                    "while [ \"$1\" != -o ]; do shift; done; echo built > \"$2\"\n")
    fake.chmod(0o755)
    monkeypatch.setenv("EITMON_CACHE_DIR", str(tmp_path / "cache"))
    target = library.build(str(fake))
    assert target.parent == tmp_path / "cache" / "kernels" and target.read_text() == "built\n"
    assert fsynced == ["file", "folder"]
    assert [path.name for path in target.parent.iterdir()] == [target.name]
    assert target == library.library_path(str(fake))  # the content key is stable


def test_broken_compiler_falls_back_with_a_warning(tmp_path) -> None:
    fake = tmp_path / "g++"
    fake.write_text("#!/bin/sh\necho 'fake compiler 1.0'\n[ \"$1\" = --version ] || exit 1\n")
    fake.chmod(0o755)
    env = {**os.environ, "CXX": str(fake), "EITMON_CACHE_DIR": str(tmp_path / "cache")}
    code = ("import logging; logging.basicConfig(); "
            "from worker.recon.d2ip.cpu import library; print(library.available())")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
    assert "channels-last path" in out.stderr


def _block_and_grads(x, *params):
    unit1, unit2, shortcut = params[:5], params[5:10], params[10:]
    out = fused_net.res_block(x, unit1, unit2, shortcut)
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
    before = library.set_threads(1)
    try:
        for threads in (1, 2, 3):
            library.set_threads(threads)
            y = fused_loss.matvec(a, v)
            runs.append([*_block_and_grads(*args), y, *torch.autograd.grad(y.square().sum(), v)])
    finally:
        library.set_threads(before)
    for other in runs[1:]:
        for x, y in zip(runs[0], other, strict=True):
            assert torch.equal(x, y)


@needs_kernels
@pytest.mark.timeout(120)
def test_sleeping_pool_neither_hangs_nor_changes_results() -> None:
    """Spin 0: every wait in the pool is a sleep on a condition variable (a lost wake-up would
    hang here); many short jobs give the same results as with spinning threads."""
    gen = torch.Generator().manual_seed(5)
    a = torch.randn(64, 257, generator=gen)
    vs = torch.randn(2000, 257, generator=gen)
    before = library.set_threads(2), library.set_spin(library.SPIN_US)
    try:
        spinning = [fused_loss.matvec(a, v) for v in vs]
        library.set_spin(0)
        sleeping = [fused_loss.matvec(a, v) for v in vs]
        assert library.kernels().eitmon_spin() == 0
    finally:
        library.set_threads(before[0])
        library.set_spin(before[1])
    for x, y in zip(spinning, sleeping, strict=True):
        assert torch.equal(x, y)


@needs_kernels
@pytest.mark.timeout(60)
def test_the_pool_counts_its_awake_workers() -> None:
    """A worker is awake (runnable) while it spins for the next job and asleep after: what the
    `ThreadTuner` subtracts from the machine's runnable threads."""
    a = torch.randn(64, 257, generator=torch.Generator().manual_seed(5))
    # a 60 s spin: the worker stays awake however late a loaded machine schedules this thread
    before = library.set_threads(2), library.set_spin(60_000_000)
    try:
        fused_loss.matvec(a, a[0])
        deadline = time.monotonic() + 30.0  # waits for the worker to run, not for a time
        while library.awake_workers() != 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert library.awake_workers() == 1
        library.set_spin(0)
        fused_loss.matvec(a, a[0])  # the worker sleeps once it finds no job
        deadline = time.monotonic() + 5.0
        while library.awake_workers() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert library.awake_workers() == 0
        library.set_threads(1)
        library.kernels()
        assert library.awake_workers() == 0
    finally:
        library.set_threads(before[0])
        library.set_spin(before[1])
        library.kernels()


def test_the_machine_s_runnable_threads(tmp_path) -> None:
    (tmp_path / "loadavg").write_text("3.51 2.10 1.05 7/612 12345\n")
    assert library.runnable(tmp_path / "loadavg") == 7
    assert library.runnable(tmp_path / "missing") is None
    live = library.runnable()
    assert live is None or live >= 1  # this thread runs while it reads


class _Machine:
    """/proc/stat and this thread's schedstat as files a test writes; a clock it moves."""

    def __init__(self, root) -> None:
        self.stat, self.thread, self.t = root / "stat", root / "schedstat", 0.0
        self.own, self.nice = 0.0, 0

    def set(self, user: int, nice: int, system: int, run_s: float, wait_s: float) -> None:
        self.stat.write_text(f"cpu  {user} {nice} {system} 100 0 0 0 0 0 0\ncpu0 1 2 3\n")
        self.thread.write_text(f"{int(run_s * 1e9)} {int(wait_s * 1e9)} 7\n")


def test_foreground_demand_counts_threads_at_normal_priority(tmp_path) -> None:
    """Others' CPU at normal priority over the interval, divided by this thread's share of a
    CPU while runnable: two busy nice-0 processes beside this one thread on two CPUs each get
    this thread's 2/3 of a CPU (4/3 CPU s a second): 2 threads. Niced time does not count."""
    m = _Machine(tmp_path)
    hz = os.sysconf("SC_CLK_TCK")
    m.set(user=0, nice=0, system=0, run_s=0.0, wait_s=0.0)
    demand = library.ForegroundDemand(m.stat, m.thread, own=lambda: m.own,
                                      clock=lambda: m.t, own_nice=lambda: m.nice)
    assert demand() is None  # nothing measured yet
    m.t, m.own = 1.0, 2 / 3  # one second: this thread ran 2/3 s and waited 1/3 s
    m.set(user=2 * hz, nice=5 * hz, system=0, run_s=2 / 3, wait_s=1 / 3)
    assert demand() == pytest.approx(2.0, rel=0.02)
    m.t = 1.2  # within the window: the last estimate
    m.set(user=3 * hz, nice=5 * hz, system=0, run_s=0.7, wait_s=0.4)
    assert demand() == pytest.approx(2.0, rel=0.02)
    # the next second: nice-19 jobs beside this thread alone, which waited 1 % of its time;
    # the machine's normal-priority time is this thread's and 0.01 s of daemons'
    m.t, m.own = 2.0, 2 / 3 + 0.99
    m.set(user=3 * hz, nice=6 * hz, system=0, run_s=2 / 3 + 0.99, wait_s=1 / 3 + 0.01)
    assert demand() == pytest.approx(0.0, abs=0.05)
    m.nice = 10  # this process niced: its own time is in `nice` too; unknown
    m.t = 3.0
    assert demand() is None
    m.nice = 0
    m.stat.unlink()
    m.t = 4.0
    assert demand() is None


def test_foreground_demand_of_this_machine_is_a_number() -> None:
    demand = library.ForegroundDemand(window_s=0.0)
    t0 = time.process_time()
    while time.process_time() - t0 < 0.2:  # this thread wants a CPU
        pass
    value = demand()
    assert value is None or value >= 0.0


def test_thread_setting() -> None:
    before = library.set_threads(3)
    try:
        assert library.threads() == 3
        assert library.set_threads(None) == 3
        assert 1 <= library.threads() <= min(len(os.sched_getaffinity(0)), library.MAX_THREADS)
        with pytest.raises(ValueError, match="at least 1"):
            library.set_threads(0)
    finally:
        library.set_threads(before)


def test_cpu_quota_of_the_container(tmp_path) -> None:
    assert library._cgroup_cpus(tmp_path) is None  # no cgroup files: unknown
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert library._cgroup_cpus(tmp_path) is None
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # a 1.5 CPU limit (v2)
    assert library._cgroup_cpus(tmp_path) == 1.5
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert library._cgroup_cpus(tmp_path) is None
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")  # v1
    assert library._cgroup_cpus(tmp_path) == 3.0


@needs_kernels
def test_kernels_run_in_a_forked_child() -> None:
    # the parent's pool threads do not exist in a forked child: it must not wait for them
    library.set_threads(2)
    try:
        x = torch.randn(4, 5, 6, 8)
        w = [torch.randn(8, 1, 3, 3, 3), torch.randn(8, 8), torch.zeros(8), torch.ones(8),
             torch.zeros(8)]
        expected = fused_net.dwsep_unit(x, *w)  # the parent's pool is running now
        pid = os.fork()
        if pid == 0:  # child: exit status 0 only when it gets the parent's result
            code = 1
            try:
                code = 0 if torch.equal(fused_net.dwsep_unit(x, *w), expected) else 1
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
        library.set_threads(None)
