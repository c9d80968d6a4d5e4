"""The data-scaled per-frame lambda_TV (beyond the paper) and how D2IP uses it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from worker.forward.model import ForwardModel
from worker.recon.base import create
from worker.recon.d2ip.config import Iterations
from worker.recon.d2ip.lambda_rule import KAPPA, DataScaledRule, FixedLambda
from worker.recon.d2ip.objective import LossConfig
from worker.recon.d2ip.reconstructor import D2IP
from worker.recon.finite_difference import MaskedDifference, total_variation
from worker.recon.tikhonov import tikhonov_operator

ITERS = Iterations(cold=8, warm=4, propagated=3)


def make(model: ForwardModel, tmp_path: Path, name: str = "d2ip", **options) -> D2IP:
    recon = create(name, model, device="cpu",
                   **{"iterations": ITERS, "warm_start_dir": tmp_path, **options})
    assert isinstance(recon, D2IP)
    return recon


def test_lambda_is_kappa_times_data_energy_over_tikhonov_tv(coarse_model: ForwardModel,
                                                            frames3: np.ndarray) -> None:
    w = coarse_model.operator.weights
    rule = DataScaledRule().bind(coarse_model, w, LossConfig())
    dv = frames3[1]
    x = torch.from_numpy(tikhonov_operator(coarse_model).matrix @ dv.astype(np.float32))
    tv = total_variation(x, MaskedDifference(coarse_model.mask), 1e-6)
    expected = KAPPA * np.mean((w * dv) ** 2) / float(tv)
    assert rule(dv) == pytest.approx(expected, rel=1e-4)


def test_lambda_scales_with_the_data(coarse_model: ForwardModel, frames3: np.ndarray) -> None:
    rule = DataScaledRule().bind(coarse_model, coarse_model.operator.weights, LossConfig())
    dv = frames3[2]
    assert rule(3.0 * dv) == pytest.approx(3.0 * rule(dv), rel=1e-3)
    assert rule(np.zeros_like(dv)) == 0.0
    with pytest.raises(ValueError):
        DataScaledRule(kappa=0.0)
    fixed = FixedLambda().bind(coarse_model, coarse_model.operator.weights, LossConfig(lam=0.01))
    assert fixed(dv) == fixed(3.0 * dv) == 0.01


def test_d2ip_optimises_each_frame_with_its_own_lambda(coarse_model: ForwardModel,
                                                       frames3: np.ndarray,
                                                       tmp_path: Path) -> None:
    recon = make(coarse_model, tmp_path, lam_rule="data", kappa=0.05)
    assert recon.settings["lam_rule"] == "data" and recon.settings["kappa"] == 0.05
    recon.push(frames3[0])
    lam = recon.frame_lambda(frames3[1])
    assert lam != recon.config.loss.lam
    with torch.no_grad():
        start = recon.objective(recon.measurements(frames3[1]), recon.window, lam)
    recon.push(frames3[1])
    assert recon.last.loss_history[0] == pytest.approx(float(start.total), rel=1e-6)


def test_the_rule_is_part_of_the_warm_start_key(coarse_model: ForwardModel,
                                                tmp_path: Path) -> None:
    fixed = make(coarse_model, tmp_path)
    data = make(coarse_model, tmp_path, lam_rule="data")
    other = make(coarse_model, tmp_path, lam_rule="data", kappa=0.01)
    assert len({fixed.key, data.key, other.key}) == 3
    assert make(coarse_model, tmp_path, "dip").settings["lam_rule"] == "fixed"
    with pytest.raises(ValueError):
        make(coarse_model, tmp_path, lam_rule="auto")
