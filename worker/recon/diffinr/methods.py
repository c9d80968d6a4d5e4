"""The two INR methods behind the registry (`worker.recon.base`): `inr-tv` and `diff-inr`.

- `inr-tv`: the seed's INR+TV baseline, the INR of eq. (15) with TV in place of the prior.
- `diff-inr`: the seed's method, the INR regularised by score distillation from the 2D
  diffusion prior (eq. 14, 17) on random slices of its volume.
Both carry the MLP's weights from frame to frame unless `carry=False`, and fit the nonlinear
data term by RELINEARISE Gauss-Newton steps after the linear fit (`relinearise=0`: linear only);
their image is then Δσ/σ0 = e^u - 1 of the fitted log-conductivity ratio u.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from worker.recon.base import register
from worker.recon.diffinr.reconstructor import INRReconstructor
from worker.recon.diffinr.regularisers import (
    SDS_KAPPA,
    SDS_SLICES,
    ImagePrior,
    SDSRegulariser,
    TVRegulariser,
)
from worker.recon.diffinr.slices import Orientation, SliceSampler, plane_range
from worker.recon.finite_difference import MaskedDifference
from worker.recon.lambda_rule import KAPPA

if TYPE_CHECKING:
    from worker.forward.model import ForwardModel

SLICE_SIZE = 32  # pixels per side of a slice: the prior's resolution
SDS_WINDOW = 50  # the stopping rule's window for the stochastic SDS loss (inr-tv: 25)
# INR+TV's Adam step. At the seed's 0.01 the first steps kill 66-73 % of the second layer's
# units on the thorax and the fit is still far from its (convex) objective's minimum when the
# stopping rule ends it (~200 iterations): MSSIM 0.268 on `healthy-deep-breath`. 0.002 was
# picked between the two on a held-out frame (frame 17, not scored by the bench): 9 % dead,
# MSSIM 0.415 against 0.352 after 200 iterations; the tank is unchanged within its seeds' spread.
# Diff-INR keeps 0.01: with 0.002 it lost 0.06 SSIM on the tank (docs/diff-inr.md, "Thorax").
INR_TV_LR = 0.002
# Axial planes alone leave the INR free along z between them: on the thorax, whose lungs change
# along z (the tank's prisms do not), Diff-INR's coronal view showed bands, one per voxel plane.
# With vertical planes too, a held-out thorax frame (frame 17 of `healthy-deep-breath`) gave CC
# 0.68 against 0.61, MSSIM 0.325 against 0.269 (docs/diff-inr.md, "Thorax").
ORIENTATIONS: tuple[Orientation, ...] = ("axial", "coronal", "sagittal")
# Gauss-Newton steps of the data term (`worker.forward.linearisation`), like the seed's absolute
# method, which recomputes its forward problem and Jacobian: on the tank the linear data term
# drives the insulators' Δσ/σ0 of -0.99 to about -2.4 (the truth itself leaves 63 % of the data
# unexplained by the linear model). INR+TV's misfit on the tank, over the data energy: 0.037
# after the linear fit, then 0.0084, 0.0054 and 0.0045 after each step; Diff-INR's steps are
# often undone (docs/diff-inr.md, "The data term"). Each step costs one solve and one Jacobian.
RELINEARISE = 3


@register("inr-tv")
def inr_tv(model: ForwardModel, kappa: float = KAPPA, device: str = "cpu",
           **options: object) -> INRReconstructor:
    """INR+TV: eq. (17) with λ TV_ε, λ by the data-scaled rule at κ."""
    regulariser = TVRegulariser(MaskedDifference(model.mask, device), kappa)
    options.setdefault("lr", INR_TV_LR)
    options.setdefault("relinearise", RELINEARISE)
    return INRReconstructor(model, regulariser, "inr-tv", device=device, **options)


@register("diff-inr")
def diff_inr(model: ForwardModel, kappa: float = SDS_KAPPA, slices: int = SDS_SLICES,
             slice_size: int = SLICE_SIZE, orientations: tuple[Orientation, ...] = ORIENTATIONS,
             prior: ImagePrior | None = None, device: str = "cpu",
             **options: object) -> INRReconstructor:
    """Diff-INR: eq. (17) with λ L_SDS on `slices` random planes a step; `prior` defaults to
    the shipped diffusion prior (`worker.recon.diffinr.sds.SDSPrior.load_default()`)."""
    if prior is None:
        from worker.recon.diffinr.sds import SDSPrior  # the shipped weights load on first use

        prior = SDSPrior.load_default()
    seed = int(options.get("seed", 0))  # type: ignore[call-overload]
    options.setdefault("window", SDS_WINDOW)
    options.setdefault("relinearise", RELINEARISE)
    sampler = SliceSampler(model.geometry, plane_range(model.geometry, model.grid), slice_size,
                           tuple(orientations))
    regulariser = SDSRegulariser(prior, sampler, kappa, slices, seed)
    return INRReconstructor(model, regulariser, "diff-inr", device=device, **options)
