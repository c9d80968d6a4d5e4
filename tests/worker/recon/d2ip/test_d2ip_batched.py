"""`batched.BatchedSessions`: one stacked step for N sessions equals N separate Adam steps (each
session's gradient from the one batched loss, and `StackedAdam` against one torch.optim.Adam per
session), with sessions joining and leaving between steps.

Weights after several Adam steps are not compared directly: Adam divides each gradient element
by its own running magnitude, so elements whose gradient is at float32 rounding level move by up
to the learning rate either way; the gradients and the optimiser are each compared exactly."""

from __future__ import annotations

import pytest
import torch

from worker.bench.synthetic import make_problem
from worker.recon.d2ip.batched import BatchedSessions, StackedAdam
from worker.recon.d2ip.execution import ReferenceExecution
from worker.recon.d2ip.network import FastResUNet3D, NetConfig, make_input
from worker.recon.d2ip.objective import Objective
from worker.recon.d2ip.optimise import Adam, adam_iteration
from worker.recon.d2ip.prior import VolumeWindow

GRID = (4, 8, 8)
CONFIG = NetConfig(widths=(8, 8, 16), stem_width=8, bottleneck_width=16, zero_tail=False)
LR = 1e-2  # large, so that Adam's per-session bias correction shows in the weights


class Single:
    """One session the usual way: its own network, objective and torch.optim.Adam."""

    def __init__(self, seed: int, problem) -> None:
        self.net = FastResUNet3D(CONFIG, seed=seed)
        self.z = make_input(seed, GRID, CONFIG.in_channels)
        self.objective = ReferenceExecution().objective(self.net, self.z, problem.jacobian,
                                                        problem.mask)
        self.adam = Adam(self.net, LR)
        self.window = self.objective.new_window()

    def step(self, dv: torch.Tensor, lam: float | None = None) -> float:
        terms = adam_iteration(self.objective, self.adam, dv, self.window, lam)
        return float(terms.total.detach())


@pytest.fixture(scope="module")
def problem():
    return make_problem(GRID, n_meas=64, seed=1)


def frames(problem, seed: int, n: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [problem.dv * (1 + 0.3 * torch.randn(1, generator=gen)) for _ in range(n)]


def shared_objective(problem) -> Objective:
    net = FastResUNet3D(CONFIG, seed=99)
    return ReferenceExecution().objective(net, make_input(99, GRID, CONFIG.in_channels),
                                          problem.jacobian, problem.mask)


def joined(problem, singles: dict[str, Single]) -> BatchedSessions:
    """The sessions' current weights, Z, Adam moments and windows (copies) in one batch."""
    batched = BatchedSessions(shared_objective(problem), LR)
    for key, s in singles.items():
        window = VolumeWindow(s.window.frames.shape[1], s.window.window)
        window.load_state_dict(s.window.state_dict())
        batched.join(key, s.net, s.z, s.adam.moments(), window)
    return batched


def test_one_batched_loss_gives_each_session_its_own_gradient(problem) -> None:
    """Sessions at different points (Adam steps, windows, lambda_TV): the stacked gradient of
    the summed losses holds, per session, the gradient of that session alone."""
    singles = {k: Single(seed, problem) for k, seed in (("a", 1), ("b", 2), ("c", 3))}
    dv = {k: frames(problem, seed, 4) for k, seed in (("a", 11), ("b", 12), ("c", 13))}
    for i in range(3):
        singles["a"].step(dv["a"][i])
    singles["a"].window.push(torch.rand(int(problem.mask.sum())))
    batched = joined(problem, singles)
    lams = {"b": 0.01}
    lam = {k: torch.tensor(lams.get(k, batched.objective.loss.lam)) for k in batched.keys}
    raw = batched.outputs()
    totals = [batched.objective.terms_of(raw[n], dv[k][3], batched.windows[k].frames,
                                         batched.windows[k].weights(), lam[k]).total
              for n, k in enumerate(batched.keys)]
    torch.stack(totals).sum().backward()
    for n, key in enumerate(batched.keys):
        s = singles[key]
        s.adam.zero_grad()
        total = s.objective(dv[key][3], s.window, lams.get(key)).total
        assert float(totals[n]) == pytest.approx(float(total), rel=1e-5)
        total.backward()
        for name, p in s.net.named_parameters():
            g = batched.params[name].grad[n]
            torch.testing.assert_close(g, p.grad, rtol=1e-3,
                                       atol=1e-4 * float(p.grad.abs().max()))


def test_stacked_adam_steps_each_session_at_its_own_count() -> None:
    """Same gradients in: StackedAdam gives what one torch.optim.Adam per session gives, for
    sessions that joined at different steps and one that leaves."""
    gen = torch.Generator().manual_seed(0)
    weights = {k: torch.randn(3, 4, generator=gen) for k in "abc"}
    singles = {k: torch.optim.Adam([torch.nn.Parameter(w.clone())], lr=LR) for k, w in
               weights.items()}
    stacked = StackedAdam(LR)
    params = {"w": torch.zeros(0, 3, 4)}

    def step(keys: str) -> None:
        grads = torch.randn(len(keys), 3, 4, generator=gen)
        params["w"].grad = grads
        stacked.step(params)
        for n, k in enumerate(keys):
            p = singles[k].param_groups[0]["params"][0]
            p.grad = grads[n].clone()
            singles[k].step()

    for key in "ab":
        stacked.append({"w": weights[key]}, None)
        params["w"] = torch.cat([params["w"], weights[key][None].clone()])
    step("ab")
    step("ab")
    stacked.append({"w": weights["c"]}, None)
    params["w"] = torch.cat([params["w"], weights["c"][None].clone()])
    step("abc")
    moments = stacked.remove(0)
    params["w"] = params["w"][1:]
    assert float(moments["w"]["step"]) == 3.0
    state = singles["a"].state[singles["a"].param_groups[0]["params"][0]]
    torch.testing.assert_close(moments["w"]["exp_avg"], state["exp_avg"])
    step("bc")
    assert stacked.steps.tolist() == [4.0, 2.0]
    for n, k in enumerate("bc"):
        torch.testing.assert_close(params["w"][n], singles[k].param_groups[0]["params"][0].data,
                                   rtol=1e-6, atol=1e-7)


def test_sessions_join_and_leave_between_steps(problem) -> None:
    """A session joins with its Adam moments and window and leaves with them: what it takes
    away continues as a single session; the batch goes on with the others."""
    singles = {k: Single(seed, problem) for k, seed in (("a", 1), ("b", 2))}
    dv = {k: frames(problem, seed, 6) for k, seed in (("a", 11), ("b", 12), ("c", 13))}
    singles["a"].step(dv["a"][0])
    batched = joined(problem, singles)
    batched.step({k: dv[k][1] for k in ("a", "b")})
    c = Single(3, problem)
    batched.join("c", c.net, c.z)
    batched.windows["a"].push(torch.ones(int(problem.mask.sum())))
    terms = batched.step({k: dv[k][2] for k in ("a", "b", "c")})
    assert float(terms["c"].total) == pytest.approx(c.step(dv["c"][2]), rel=1e-5)
    assert batched.adam.steps.tolist() == [3.0, 2.0, 1.0]
    weights_a = {name: t[0].detach().clone() for name, t in batched.params.items()}
    state = batched.leave("a")
    assert batched.keys == ["b", "c"] and len(batched) == 2
    assert float(state.window.frames[-1].sum()) == int(problem.mask.sum())
    moved = FastResUNet3D(CONFIG, seed=0)
    moved.load_state_dict(state.weights)
    for name, p in moved.named_parameters():
        assert torch.equal(p.detach(), weights_a[name])
    alone = Adam(moved, LR)
    alone.load_moments(state.moments)  # one step count for all parameters: 3
    objective = ReferenceExecution().objective(moved, singles["a"].z, problem.jacobian,
                                               problem.mask)
    adam_iteration(objective, alone, dv["a"][3], state.window)
    assert float(next(iter(alone.moments().values()))["step"]) == 4.0
    terms = batched.step({k: dv[k][3] for k in ("b", "c")})
    assert set(terms) == {"b", "c"} and batched.adam.steps.tolist() == [3.0, 2.0]


def test_join_and_step_check_their_input(problem) -> None:
    batched = BatchedSessions(shared_objective(problem), LR)
    single = Single(1, problem)
    batched.join("a", single.net, single.z)
    with pytest.raises(ValueError, match="joined"):
        batched.join("a", single.net, single.z)
    with pytest.raises(ValueError, match="Z has shape"):
        batched.join("b", single.net, single.z[:, :, :2])
    with pytest.raises(ValueError, match="every session"):
        batched.step({"a": problem.dv, "b": problem.dv})
