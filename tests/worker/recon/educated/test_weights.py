"""Educated weights: shipped for the default configuration, else trained once and cached."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from service.contract.geometry import resolve_geometry
from service.contract.grid import resolve_grid
from service.contract.protocol import resolve_protocol
from tests.worker.recon.educated.conftest import TINY
from worker.forward.model import ForwardModel, model_spec
from worker.recon.d2ip.network import FastResUNet3D
from worker.recon.educated import weights
from worker.recon.educated.weights import SHIPPED, default_config, educated_key, educated_state


def test_default_weights_ship_with_the_package() -> None:
    spec = model_spec(resolve_geometry(None), resolve_protocol(None), resolve_grid(None))
    path = SHIPPED / f"{educated_key(spec, default_config())}.pt"
    assert path.is_file() and path.stat().st_size < 400_000
    stored = torch.load(path, weights_only=True)
    net = FastResUNet3D(default_config().net)
    assert {n: p.shape for n, p in net.named_parameters()} == {
        n: v.shape for n, v in stored["state"].items()}


def test_other_configurations_train_once_then_load(coarse_model: ForwardModel,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    monkeypatch.setenv("EITMON_CACHE_DIR", str(tmp_path))
    first = educated_state(coarse_model, TINY)
    assert (tmp_path / weights.CACHE_FOLDER / f"{educated_key(coarse_model.spec, TINY)}.pt"
            ).is_file()

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("trained again")

    monkeypatch.setattr(weights, "train", no_training)
    again = educated_state(coarse_model, TINY)
    for name, value in first.items():
        torch.testing.assert_close(again[name], value, rtol=0, atol=0)
