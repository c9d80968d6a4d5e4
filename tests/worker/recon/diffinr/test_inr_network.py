"""The INR of eq. (4) and (15): the Fourier features, the MLP, the normalised coordinates."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.contract.geometry import resolve_geometry
from service.contract.grid import resolve_grid
from worker.forward.voxel import domain_mask
from worker.recon.diffinr.inr import INR, DomainFrame, FourierFeatures, voxel_centres


def test_fourier_features_follow_eq_4() -> None:
    gen = torch.Generator().manual_seed(0)
    enc = FourierFeatures(3, sigma=2.0, features=4000, generator=gen)
    assert enc.out_features == 8000
    assert abs(float(enc.b.std()) - 2.0) < 0.05  # B ~ N(0, σ²)
    p = torch.rand(5, 3)
    gamma = enc(p)
    angle = 2 * torch.pi * p @ enc.b.T
    torch.testing.assert_close(gamma, torch.cat([angle.cos(), angle.sin()], -1))
    assert not enc.b.requires_grad and "b" in enc.state_dict()  # fixed, saved, not trained


def test_inr_starts_empty_and_is_seeded() -> None:
    p = torch.rand(50, 3) * 2 - 1
    a, b, c = INR(3, 3.0, seed=1), INR(3, 3.0, seed=1), INR(3, 3.0, seed=2)
    assert torch.count_nonzero(a(p)) == 0  # the output layer starts at zero: Δσ = 0
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name
    assert not torch.equal(a.encoding.b, c.encoding.b)
    linears = [m for m in a.mlp if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [128, 128, 128, 128, 1]  # 4 x 128 (4.4)


def test_rescaling_the_output_unit_keeps_the_function() -> None:
    p = torch.rand(50, 3) * 2 - 1
    net = INR(3, 3.0, seed=1, features=16, width=16)
    torch.nn.init.normal_(net.mlp[-1].weight)
    before = net(p).detach()
    net.rescale(0.05)
    assert net.scale == 0.05
    torch.testing.assert_close(net(p), before)
    with pytest.raises(ValueError, match="scale"):
        net.rescale(0.0)


def test_coordinates_fill_the_normalised_domain() -> None:
    geo, grid = resolve_geometry("cylinder-1x16"), resolve_grid((8, 32, 32))
    mask = domain_mask(geo, grid)
    points = DomainFrame.of(geo).normalise(voxel_centres(geo, grid, mask))
    assert points.shape == (int(mask.sum()), 3)
    radius = np.hypot(points[:, 0], points[:, 1])
    assert radius.max() <= 1.0 and radius.max() > 0.9  # the tank's wall at 1
    np.testing.assert_allclose(points[:, 2].mean(), 0.0, atol=1e-12)  # centred in height
    thorax = resolve_geometry("thorax-2x16")
    tmask = domain_mask(thorax, resolve_grid(None))
    tpoints = DomainFrame.of(thorax).normalise(voxel_centres(thorax, resolve_grid(None), tmask))
    assert np.abs(tpoints[:, 0]).max() <= 1.0 and np.abs(tpoints[:, 1]).max() < 0.7  # aspect
