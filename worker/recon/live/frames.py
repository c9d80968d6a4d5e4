"""Simulated training frames on a session's own model: (preview, truth) pairs.

The linearised model y = J x + noise (D2IP eq. 1) on the reconstruction grid, with x the
relative conductivity change Δσ/σ0 of a breathing-thorax phantom (`worker.simulation.phantom`)
between a reference and a frame state, sampled at the voxel centres. Every frame draws its own
thorax: lung sizes and centres, heart size, breath depths, one-sided loss of ventilation,
left dorsal edema, a spine, and an SNR. The evaluation cases (`worker.simulation.cases`) use
the unperturbed phantom and FEM voltages on a finer mesh, so they are not among these frames
(no inverse crime; docs/d2ip-live.md).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from worker.recon.greit import voxel_centres
from worker.simulation.phantom import BreathState, Lung, Phantom, thorax_phantom

if TYPE_CHECKING:
    from worker.forward.model import ForwardModel

SNR_DB = (40.0, 60.0)  # uniform range of the frames' SNR (dB below the rms reference voltage)
ONE_SIDED = 0.15  # share of frames where one lung does not ventilate
EDEMA = 0.25  # share of thoraxes with the left dorsal edema


@dataclass(frozen=True)
class TrainingFrames:
    """T frames: normalised voltage changes (T, M), their truths (T, V) inside the mask."""

    dv: np.ndarray
    truth: np.ndarray


def _lung(lung: Lung, rng: np.random.Generator, a: float, b: float) -> Lung:
    shift = rng.uniform(-0.05, 0.05, 2) * (a, b)
    return replace(lung, centre=lung.centre + np.array([*shift, 0.0]),
                   semi_axes=lung.semi_axes * rng.uniform(0.8, 1.1, 2))


def random_phantom(model: ForwardModel, rng: np.random.Generator) -> Phantom:
    """The thorax phantom with drawn lungs, heart, spine and edema."""
    dom = model.geometry.domain
    a, b = dom.width / 2, dom.depth / 2
    base = thorax_phantom(model.geometry, edema=bool(rng.random() < EDEMA),
                          spine=bool(rng.random() < 0.5))
    edema = (None if base.edema_left_dorsal is None
             else base.edema_left_dorsal + rng.uniform(-0.1, 0.1) * b)
    return replace(base, right=_lung(base.right, rng, a, b), left=_lung(base.left, rng, a, b),
                   heart_axes=base.heart_axes * rng.uniform(0.8, 1.2, 3),
                   edema_left_dorsal=edema)


def random_change(phantom: Phantom, points: np.ndarray, rng: np.random.Generator
                  ) -> np.ndarray:
    """Δσ/σ0 at `points` between a drawn reference state and a drawn frame state: an
    end-expiration or empty-thorax reference, a deeper frame, the heart pulsing."""
    bg = phantom.background
    u0, u1 = np.sort(rng.uniform(0.0, 1.4, 2))
    heart = bg * (1 + rng.uniform(-0.03, 0.03, 2))
    ref = BreathState(0.7 * (1 + 0.2 * u0), 0.14 - 0.0565 * u0, heart[0])
    frame = BreathState(0.7 * (1 + 0.2 * u1), 0.14 - 0.0565 * u1, heart[1])
    sigma_ref = (np.full(len(points), bg) if rng.random() < 0.2
                 else phantom.conductivity(points, ref))
    sigma = phantom.conductivity(points, frame)
    if rng.random() < ONE_SIDED:  # one lung keeps its reference conductivity
        side = phantom.lungs(points, frame)[int(rng.integers(2))]
        sigma[side] = sigma_ref[side]
    return sigma / sigma_ref - 1.0


def training_frames(model: ForwardModel, n: int, seed: int) -> TrainingFrames:
    """`n` frames: y = J x + noise with white noise at a drawn SNR, in the normalised units
    of the data (the noise on channel i is η / w_i, w the operator's whitening weights)."""
    rng = np.random.default_rng(seed)
    points = voxel_centres(model)
    weights = model.operator.weights
    used = weights > 0  # excluded channels carry no data
    scale = np.where(used, 1.0 / np.where(used, weights, 1.0), 0.0)
    truths, dvs = [], []
    for _ in range(n):
        x = random_change(random_phantom(model, rng), points, rng)
        eta = 10.0 ** (-rng.uniform(*SNR_DB) / 20.0)
        dvs.append(model.jacobian @ x + eta * scale * rng.standard_normal(len(weights)))
        truths.append(x)
    return TrainingFrames(dv=np.asarray(dvs, dtype=np.float32),
                          truth=np.asarray(truths, dtype=np.float32))
