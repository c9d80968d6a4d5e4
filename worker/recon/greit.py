"""GREIT in 3D: a linear reconstruction matrix trained on small targets (Adler et al. 2009,
"GREIT: a unified approach to 2D linear EIT reconstruction of lung images", Physiol. Meas. 30
S35; in 3D as Grychtol et al. 2016, "Thoracic EIT in 3D", and EIDORS' mk_GREIT_model).

Training set. N targets (`n_targets`, default 1000, EIDORS' Nsim) at positions drawn
uniformly over the body's voxels (all planes: a 3D image, not one slice; seeded): each is a
small sphere, the voxels whose centres lie within r_t = `target_size` · R of its centre (at
least the voxel holding it), R = (width + depth)/4 the body's mean half-extent, contrast 1.
Training data are linearised, y_k = J x_k (the model's voxel Jacobian; no nonlinear solves,
which at the small contrast of a target they would barely change). Desired image of each
target: a Gaussian of standard deviation `blur` · R (in metres, isotropic, so the true voxel
spacing counts) around the target's centre, restricted to the body and scaled to the target's
total contrast Σ x_k: GREIT's "blurred target", its width the resolution we ask for.

Reconstruction matrix. GREIT's least-squares solution (Adler 2009 eq. 9, weighted by the noise
covariance Σ_n) minimises Σ_k ‖d_k - R y_k‖² + λ E‖R n‖²:
    R = D Yᵀ (Y Yᵀ + λ Σ_n)⁻¹,
with Σ_n = W⁻¹ the noise covariance the operator's whitening assumes
(`worker.forward.operator`). In whitened data Ỹ = W^½ Y (= A X) this is
    R = D Ỹᵀ (Ỹ Ỹᵀ + λ I)⁻¹ W^½,
computed through the eigen-decomposition Ỹ Ỹᵀ = U S² Uᵀ (M x M): a channel with zero weight
(an excluded electrode) drops out exactly.

Hyperparameter: λ by the noise figure (Adler & Guardo 1996, as EIDORS' choose_noise_figure),
NF = SNR_data / SNR_image = (‖ỹ_c‖² / tr Σ̃_n) / (‖R̃ ỹ_c‖² / tr(R̃ Σ̃_n R̃ᵀ)), with ỹ_c the data
of one training target at the body's centre in the electrodes' plane, R̃ the whitened matrix and
Σ̃_n the identity on the channels in use. NF falls as λ grows from 0, then rises again
towards the back-projection-like limit (it can cross the target twice); λ is the smallest
value on a log grid with NF ≤ `noise_figure` (default 0.5, the value of EIDORS' GREIT
tutorials), i.e. the least regularisation that meets it. `lam=` overrides it (relative to
tr(Ỹ Ỹᵀ)/M).

R (float32, V x M) and the residual operator are cached per model and setting
(`worker.recon.store`); reconstruction is one product per batch (`worker.recon.linear`), so
GREIT serves as the worker's preview method like Tikhonov.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from service.contract.grid import voxel_edges
from worker.recon import store
from worker.recon.base import register
from worker.recon.linear import LinearReconstructor
from worker.storage import cached_arrays

if TYPE_CHECKING:
    from worker.forward.model import ForwardModel

N_TARGETS = 1000
TARGET_SIZE = 0.1  # target radius / R
BLUR = 0.15  # desired image's Gaussian s.d. / R
NOISE_FIGURE = 0.5
LAMBDA_GRID = np.logspace(-8.0, 2.0, 201)  # λ / (tr(ỸỸᵀ)/M)
CHUNK = 256


@dataclass(frozen=True)
class GreitOperator:
    """R, the whitened residual operator P = W^½(I - J R), and how λ came out."""

    matrix: np.ndarray  # (V, M) float32
    residual: np.ndarray  # (M, M) float32
    lam: float  # λ / (tr(ỸỸᵀ)/M)
    noise_figure: float  # the NF reached


def voxel_centres(model: ForwardModel) -> np.ndarray:
    """(V, 3) x, y, z in metres of the masked voxels' centres (C order, as J's columns)."""
    dom = model.geometry.domain
    z, y, x = (0.5 * (e[1:] + e[:-1])
               for e in voxel_edges(model.grid, dom.width, dom.depth, dom.height))
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    return np.column_stack([xx[model.mask], yy[model.mask], zz[model.mask]])


def body_radius(model: ForwardModel) -> float:
    """R = (width + depth)/4, the body's mean half-extent (m)."""
    return 0.25 * (model.geometry.domain.width + model.geometry.domain.depth)


def training_set(model: ForwardModel, n_targets: int, target_size: float, blur: float,
                 seed: int) -> tuple[sp.csc_matrix, np.ndarray]:
    """Targets X (V x N, sparse, contrast 1) and desired images D (V x N), module docstring."""
    centres = voxel_centres(model)
    radius = body_radius(model)
    rng = np.random.default_rng(seed)
    picked = rng.integers(0, len(centres), n_targets)
    g = model.grid
    dom = model.geometry.domain
    step = np.array([dom.width / g.cols, dom.depth / g.rows, dom.height / g.planes])
    positions = centres[picked] + (rng.random((n_targets, 3)) - 0.5) * step
    return _targets(centres, positions, picked, target_size * radius, blur * radius)


def _targets(centres: np.ndarray, positions: np.ndarray, holding: np.ndarray,
             target_radius: float, sigma: float) -> tuple[sp.csc_matrix, np.ndarray]:
    rows, cols = [], []
    desired = np.empty((len(centres), len(positions)))
    for start in range(0, len(positions), CHUNK):
        block = positions[start:start + CHUNK]
        dist2 = ((centres[:, None, :] - block[None, :, :]) ** 2).sum(axis=2)  # (V, chunk)
        inside = dist2 <= target_radius**2
        inside[holding[start:start + CHUNK], np.arange(len(block))] = True
        v, k = np.nonzero(inside)
        rows.append(v)
        cols.append(k + start)
        gauss = np.exp(-dist2 / (2.0 * sigma**2))
        desired[:, start:start + CHUNK] = gauss * (inside.sum(axis=0) / gauss.sum(axis=0))
    v, k = np.concatenate(rows), np.concatenate(cols)
    targets = sp.csc_matrix((np.ones(len(v)), (v, k)), shape=desired.shape)
    return targets, desired


def centre_target(model: ForwardModel, target_size: float) -> np.ndarray:
    """(V,) the training-sized target at the body's centre in the electrodes' mean plane."""
    centres = voxel_centres(model)
    position = np.array([[0.0, 0.0, float(np.mean(model.geometry.electrode_z))]])
    holding = np.array([int(np.argmin(((centres - position) ** 2).sum(axis=1)))])
    targets, _ = _targets(centres, position, holding, target_size * body_radius(model), 1.0)
    return targets.toarray()[:, 0]


def noise_figures(u: np.ndarray, s2: np.ndarray, b: np.ndarray, centre: np.ndarray,
                  active: np.ndarray, lams: np.ndarray) -> np.ndarray:
    """NF(λ) for R̃ = B G Uᵀ, G = diag(1/(s² + λ)), B = D Ỹᵀ U, the whitened data ỹ_c =
    `centre` and Σ̃_n = I on the `active` channels: tr(R̃Σ̃_nR̃ᵀ) = tr(G BᵀB G UᵀΣ̃_nU)."""
    coefficients = u.T @ centre
    gram = b.T @ b
    noise_basis = u[active].T @ u[active]  # Uᵀ Σ̃_n U
    data_snr = (centre**2).sum() / active.sum()
    out = []
    for lam in lams:
        gain = 1.0 / (s2 + lam)
        image = b @ (gain * coefficients)
        noise = float(((gain[:, None] * gram * gain[None, :]) * noise_basis).sum())
        out.append(data_snr / ((image**2).sum() / noise))
    return np.array(out)


def greit_operator(model: ForwardModel, n_targets: int = N_TARGETS,
                   target_size: float = TARGET_SIZE, blur: float = BLUR,
                   noise_figure: float = NOISE_FIGURE, lam: float | None = None,
                   seed: int = 0) -> GreitOperator:
    """R for this model and setting, from the recon cache or trained (module docstring)."""
    if n_targets < 1 or target_size <= 0 or blur <= 0 or noise_figure <= 0:
        raise ValueError("greit: n_targets, target_size, blur and noise_figure must be positive")
    settings = {"n_targets": n_targets, "target_size": target_size, "blur": blur,
                "noise_figure": noise_figure, "lam": lam, "seed": seed}

    def build() -> dict[str, np.ndarray]:
        operator = model.operator
        targets, desired = training_set(model, n_targets, target_size, blur, seed)
        data = np.asarray(operator.apply(targets))  # Ỹ = W^½ J X, (M, N)
        s2, u = np.linalg.eigh(data @ data.T)
        s2 = np.clip(s2, 0.0, None)
        b = desired @ (data.T @ u)  # D Ỹᵀ U, (V, M)
        scale = s2.sum() / operator.active.sum()
        centre = operator.apply(centre_target(model, target_size))
        if lam is None:
            figures = noise_figures(u, s2, b, centre, operator.active, LAMBDA_GRID * scale)
            below = np.flatnonzero(figures <= noise_figure)
            best = int(below[0]) if below.size else int(np.argmin(figures))
            chosen, reached = float(LAMBDA_GRID[best]), float(figures[best])
        else:
            chosen = float(lam)
            reached = float(noise_figures(u, s2, b, centre, operator.active,
                                          np.array([chosen * scale]))[0])
        core = u / (s2 + chosen * scale)  # U diag(1/(s² + λ))
        matrix = (b @ core.T) * operator.weights[None, :]  # R = R̃ W^½, R̃ = B G Uᵀ
        residual = np.diag(operator.weights) - operator.apply(matrix)  # W^½ - A R
        return {"matrix": matrix.astype(np.float32), "residual": residual.astype(np.float32),
                "lam": np.array(chosen), "noise_figure": np.array(reached)}

    arrays = cached_arrays(store.path_for(model, "greit", settings), build)
    return GreitOperator(matrix=arrays["matrix"], residual=arrays["residual"],
                         lam=float(arrays["lam"]), noise_figure=float(arrays["noise_figure"]))


@register("greit")
class Greit(LinearReconstructor):
    """x = R Δv per frame with GREIT's trained R; loss = the whitened data misfit."""

    method = "greit"

    def __init__(self, model: ForwardModel, n_targets: int = N_TARGETS,
                 target_size: float = TARGET_SIZE, blur: float = BLUR,
                 noise_figure: float = NOISE_FIGURE, lam: float | None = None, seed: int = 0,
                 device: str = "cpu") -> None:
        self.operator = greit_operator(model, n_targets, target_size, blur, noise_figure, lam,
                                       seed)
        super().__init__(model, self.operator.matrix, self.operator.residual, None, device)
        self.options = {"n_targets": n_targets, "target_size": target_size, "blur": blur,
                        "seed": seed}

    @property
    def settings(self) -> dict[str, Any]:
        return {**self.options, "lam": self.operator.lam,
                "noise_figure": round(self.operator.noise_figure, 4)}
