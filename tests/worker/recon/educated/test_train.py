"""Supervised pretraining: it learns, it is reproducible, it writes its outputs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from tests.worker.recon.educated.conftest import TINY
from worker.recon.educated.data import build_dataset
from worker.recon.educated.train import train, write_outputs


def test_training_lowers_the_loss_and_is_seeded(coarse_model) -> None:
    data = build_dataset(coarse_model, TINY.data)
    config = dataclasses.replace(TINY, steps=60, eval_every=30, lr=3e-3)
    a = train(coarse_model, config, dataset=data)
    assert a.curve["train"][-1] < a.curve["train"][0]
    b = train(coarse_model, config, dataset=data)
    for name, value in a.state.items():
        torch.testing.assert_close(b.state[name], value, rtol=0, atol=0)
    c = train(coarse_model, dataclasses.replace(config, seed=1), dataset=data)
    assert any(not torch.equal(c.state[n], v) for n, v in a.state.items())


def test_outputs_are_weights_and_curves(coarse_model, tmp_path: Path) -> None:
    result = train(coarse_model, TINY)
    paths = write_outputs(result, tmp_path)
    stored = torch.load(paths["weights"], weights_only=True)
    assert set(stored["state"]) == set(result.state)
    curve = json.loads(paths["curve"].read_text())
    assert curve["step"] == [2, 4] and len(curve["validation"]["linear"]) == 2
    assert np.isfinite(curve["preview"]["linear"])
    assert paths["plot"].stat().st_size > 5_000
