"""Per-frame optimisation: loss falls, adaptive stopping, determinism, the objective's mapping."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from worker.bench.synthetic import make_problem
from worker.recon.d2ip.execution import ReferenceExecution
from worker.recon.d2ip.mapping import OutputRange
from worker.recon.d2ip.network import FastResUNet3D, make_input
from worker.recon.d2ip.objective import LossConfig
from worker.recon.d2ip.optimise import (
    Adam,
    AdaptiveSchedule,
    AdaptiveStop,
    FixedIterations,
    FixedSchedule,
    optimise_frame,
)

GRID = (8, 12, 12)
REFERENCE = ReferenceExecution()


@pytest.fixture()
def deterministic() -> Iterator[None]:
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(before)


def _setup(seed: int = 0, lr: float = 1e-3):
    pb = make_problem(GRID, n_meas=64, seed=seed)
    net = FastResUNet3D(seed=seed)
    obj = REFERENCE.objective(net, make_input(seed, GRID), pb.jacobian, pb.mask)
    return pb, net, obj, Adam(net, lr)


def test_objective_maps_and_masks_the_network_output() -> None:
    pb, net, obj, _ = _setup()
    rng = OutputRange.symmetric(0.5)
    obj = REFERENCE.objective(net, obj.z, pb.jacobian, pb.mask, out_range=rng)
    with torch.no_grad():
        terms = obj(pb.dv)
        expected = rng.apply(net(obj.z))[pb.mask]
    assert terms.values.shape == (int(pb.mask.sum()),)
    torch.testing.assert_close(terms.values, expected, rtol=0, atol=1e-5)
    assert float(terms.values.abs().max()) < 0.5
    assert float(terms.total) >= float(terms.data) > 0.0


def test_objective_rejects_mismatched_shapes() -> None:
    pb, net, obj, _ = _setup()
    with pytest.raises(ValueError):
        REFERENCE.objective(net, obj.z, pb.jacobian[:, :-1], pb.mask)
    with pytest.raises(ValueError):
        REFERENCE.objective(net, make_input(0, (8, 12, 10)), pb.jacobian, pb.mask)


def test_short_optimisation_reduces_the_data_loss() -> None:
    pb, _, obj, opt = _setup()
    res = optimise_frame(obj, opt, pb.dv, stop=FixedIterations(30))
    assert res.iterations == 30 == len(res.data_history) == len(res.loss_history)
    assert res.data_loss < 0.5 * res.data_history[0]
    assert res.values.shape == (int(pb.mask.sum()),) and not res.values.requires_grad


def test_temporal_window_enters_the_loss() -> None:
    pb, _, obj, _ = _setup()
    win = obj.new_window()
    with torch.no_grad():
        base = float(obj(pb.dv, win).total)
        win.push(torch.full((int(pb.mask.sum()),), 0.9))
        assert float(obj(pb.dv, win).total) > base


def test_adaptive_stop_rule() -> None:
    rule = AdaptiveStop(min_iter=4, max_iter=50, window=2, tol=1e-3)
    assert not rule.should_stop([1.0, 1.0, 1.0])  # below min_iter
    assert rule.should_stop([1.0, 1.0, 1.0, 1.0])  # flat
    assert not rule.should_stop([4.0, 3.0, 2.0, 1.0])  # still falling
    assert rule.should_stop([1.0, 1.0, 2.0, 2.0])  # rising
    assert rule.should_stop([1.0 / (k + 1) for k in range(50)])  # max_iter


def test_adaptive_stop_ends_early_on_a_converged_problem() -> None:
    pb, net, obj, _ = _setup()
    with torch.no_grad():
        dv = pb.jacobian @ obj(pb.dv).values  # the current output fits the data exactly
    opt = Adam(net, lr=1e-8)  # nothing left to gain: the loss stays flat
    stop = AdaptiveStop(min_iter=10, max_iter=200, window=5, tol=1e-3)
    res = optimise_frame(obj, opt, dv, stop=stop)
    assert res.iterations == 10 < stop.max_iter
    assert len(res.loss_history) == 10 and res.data_loss < 1e-6


def test_same_seed_same_result(deterministic) -> None:
    results = []
    for _ in range(2):
        pb, _, obj, opt = _setup(seed=4)
        results.append(optimise_frame(obj, opt, pb.dv, stop=FixedIterations(5)))
    assert torch.equal(results[0].values, results[1].values)
    assert results[0].data_history == results[1].data_history


def test_progress_callback_and_loss_config() -> None:
    pb, net, obj, opt = _setup()
    obj = REFERENCE.objective(net, obj.z, pb.jacobian, pb.mask, loss=LossConfig(lam=0.0))
    seen: list[int] = []
    res = optimise_frame(obj, opt, pb.dv, stop=FixedIterations(3),
                         on_iteration=lambda k, loss: seen.append(k))
    assert seen == [1, 2, 3]
    assert res.loss == pytest.approx(res.data_loss)  # lambda = 0: data term only


def test_schedules_give_each_frame_its_rule() -> None:
    assert FixedSchedule().stop(250) == FixedIterations(250)
    rule = AdaptiveSchedule(min_iterations=50, tol=5e-3).stop(30)
    assert (rule.min_iter, rule.max_iter, rule.tol) == (30, 30, 5e-3)
    for bad in ({"min_iterations": 0}, {"tol": 0.0}):
        with pytest.raises(ValueError):
            AdaptiveSchedule(**bad)


def test_adam_moments_round_trip_by_name() -> None:
    pb, net, obj, opt = _setup()
    assert opt.moments() == {}
    optimise_frame(obj, opt, pb.dv, stop=FixedIterations(3))
    moments = {n: {k: v.clone() for k, v in m.items()} for n, m in opt.moments().items()}
    assert set(moments) == {n for n, _ in net.named_parameters()}
    again = Adam(net, 1e-3)
    again.load_moments(moments)
    for name, m in again.moments().items():
        assert float(m["step"]) == 3.0
        assert torch.equal(m["exp_avg_sq"], moments[name]["exp_avg_sq"])
    with pytest.raises(ValueError):
        again.load_moments({})
