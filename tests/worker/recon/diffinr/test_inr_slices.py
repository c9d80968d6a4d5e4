"""Random slices of the INR's volume for the 2D prior."""

from __future__ import annotations

import torch

from service.contract.geometry import resolve_geometry
from service.contract.grid import resolve_grid
from worker.recon.diffinr.slices import SliceSampler, plane_range


def test_axial_slices_lie_between_the_voxel_planes_and_mask_the_outside() -> None:
    geo = resolve_geometry("cylinder-1x32")
    low, high = plane_range(geo, resolve_grid((8, 32, 32)))
    assert -0.72 < low < high < 0.72  # the tank's height 0.2 m over a radius of 0.14 m
    sampler = SliceSampler(geo, (low, high), 16)
    coords, masks = sampler.sample(6, torch.Generator().manual_seed(0))
    assert coords.shape == (6, 256, 3) and masks.shape == (6, 256)
    z = coords[..., 2]
    assert torch.all(z == z[:, :1]) and torch.all((z >= low) & (z <= high))
    radius = coords[..., :2].norm(dim=-1)
    assert torch.all(masks[radius > 1.0] == 0) and torch.all(masks[radius < 0.9] == 1)


def test_other_orientations_are_vertical_planes() -> None:
    geo = resolve_geometry("cylinder-1x32")
    sampler = SliceSampler(geo, (-0.5, 0.5), 16, ("coronal", "sagittal"))
    coords, masks = sampler.sample(8, torch.Generator().manual_seed(1))
    for plane, mask in zip(coords, masks, strict=True):
        fixed = [bool(torch.all(plane[:, a] == plane[0, a])) for a in range(3)]
        assert fixed[:2] in ([False, True], [True, False]) and not fixed[2]
        assert torch.all(mask[plane[:, :2].norm(dim=-1) > 1.0] == 0)


def test_the_pixel_grid_is_shifted_so_that_no_point_between_pixels_goes_unseen() -> None:
    """A fixed lattice leaves the points halfway between its pixels unseen by the prior (the
    thorax's voxel rows lie there); the shifted grids come near every such point."""
    geo = resolve_geometry("thorax-2x16")
    sampler = SliceSampler(geo, (-0.5, 0.5), 16)
    coords, masks = sampler.sample(64, torch.Generator().manual_seed(2))
    lattice = torch.linspace(-sampler.half, sampler.half, 16)
    midway = float(lattice[7] + lattice[8]) / 2
    for axis in (0, 1):
        assert (coords[..., axis] - midway).abs().min() < 0.05 * sampler.step
    inside = sampler.inside(coords[..., 0].reshape(-1), coords[..., 1].reshape(-1))
    assert torch.equal(masks.reshape(-1), inside) and 0 < float(masks.mean()) < 1
