"""3D-FastResUNet: shapes, parameter count, fast path == reference path, seeded input."""

from __future__ import annotations

import pytest
import torch

from worker.recon.d2ip.network import FastResUNet3D, NetConfig, count_parameters, make_input

DOCUMENTED_PARAMETERS = 56_800  # the figure in docs/d2ip.md


def test_make_input_is_seeded_uniform() -> None:
    a = make_input(7, (4, 5, 6), channels=2)
    assert a.shape == (1, 2, 4, 5, 6) and a.dtype == torch.float32
    assert torch.equal(a, make_input(7, (4, 5, 6), channels=2))
    assert not torch.equal(a, make_input(8, (4, 5, 6), channels=2))
    assert 0.0 <= float(a.min()) and float(a.max()) < 1.0


def test_parameter_count_matches_the_documentation() -> None:
    assert count_parameters(FastResUNet3D()) == DOCUMENTED_PARAMETERS


def test_same_seed_same_weights() -> None:
    a, b = FastResUNet3D(seed=3), FastResUNet3D(seed=3)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert not torch.equal(a.stem.weight, FastResUNet3D(seed=4).stem.weight)
    kaiming = NetConfig(zero_tail=False)
    assert not torch.equal(FastResUNet3D(kaiming, seed=3).tail.weight,
                           FastResUNet3D(kaiming, seed=4).tail.weight)


def test_zero_tail_starts_at_no_change() -> None:
    net = FastResUNet3D(seed=2)
    assert not bool(net.tail.weight.any())
    with torch.no_grad():
        out = net(make_input(0, (4, 6, 6)))
    assert torch.equal(out, torch.full((4, 6, 6), 0.5))


@pytest.mark.parametrize("grid", [(16, 32, 32), (32, 64, 64)])
def test_project_grids_run(grid) -> None:
    net = FastResUNet3D()
    z = make_input(0, grid)
    with torch.no_grad():
        out = net(z)
    assert out.shape == grid and bool(torch.isfinite(out).all())
