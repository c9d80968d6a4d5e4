"""The whitened forward operator every reconstruction method shares, A = W^½ J.

Data weighting. The belt's noise is a fixed floor in volts, so channel i of the normalised data
Δv_i = (v_i - v_ref,i)/|v_ref,i| (D2IP eq. 1, `worker.recon.base.normalise`, divisor floored
at NORMALISE_FLOOR of the rms) carries noise ∝ 1/|v_ref,i|: channels with a small reference
voltage are the noisiest. Rows are whitened by w_i = max(|v0_i|, floor) / rms(v0), the
model's reference voltages standing in for the measured ones (so W = diag(w²) is fixed per
model, and mean(w²) = 1 away from the floor): every method fits ‖W^½(Δv - J x)‖², or its mean
over the M channels.

`JacobianOperator` holds J (M x V), w, A = diag(w) J with `apply` (A x) and `adjoint` (Aᵀ r),
and A's singular system A = U S Ṽᵀ through the M x M Gram matrix A Aᵀ = U S² Uᵀ (`spectrum`,
computed on first use, then kept in memory and, for a cached model, on disk beside it): U is a
basis of A's range, and `range_basis(rtol)` keeps the columns with s_i > rtol · s_max. The
V x M factor Ṽ is never formed. One operator per model: `ForwardModel.operator`.

Other data weights (issue 19 §3). `with_weights(w)` gives the same J under other weights, e.g.
`excluded_weights` (zero on every channel that drives or measures with a bad electrode, so no
method reconstructs through it) or `noise_weights` (from each channel's noise as estimated on
the recording itself, instead of the model's reference voltages). Such an operator carries a
`variant` key (a content hash of w) so that cached per-model matrices (`worker.recon.store`)
are kept apart; `ForwardModel.with_weights` wraps it as a model every method takes as it is.
A zero weight makes the channel's row of A vanish: A's singular system then has zero singular
values whose left vectors span the excluded channels, and the methods' data terms ignore them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from worker.storage import cached_arrays, content_key

NORMALISE_FLOOR = 0.1  # divisor floor of the data normalisation, a fraction of the rms reference
NOISE_FLOOR = 0.25  # channel noise estimates are floored at this fraction of their median
VARIANT_KEY_LENGTH = 16


def whitening_weights(reference_voltages: np.ndarray) -> np.ndarray:
    """w_i = max(|v0_i|, NORMALISE_FLOOR · rms(v0)) / rms(v0) (module docstring)."""
    v0 = np.abs(np.asarray(reference_voltages, dtype=float))
    rms = np.sqrt(np.mean(v0**2))
    return np.maximum(v0, NORMALISE_FLOOR * rms) / rms


def normalisation_divisor(reference: np.ndarray) -> np.ndarray:
    """max(|v_ref,i|, NORMALISE_FLOOR · rms(v_ref)): the divisor of the data normalisation."""
    reference = np.abs(np.asarray(reference, dtype=float))
    return np.maximum(reference, NORMALISE_FLOOR * np.sqrt(np.mean(reference**2)))


def channels_using(currents: np.ndarray, meas_injection: np.ndarray, meas_weights: np.ndarray,
                   electrodes: list[int] | tuple[int, ...]) -> np.ndarray:
    """(M,) bool: the channels that drive or measure with any of `electrodes` (0-based), for a
    built protocol (`service.contract.protocol.Protocol`'s arrays)."""
    chosen = np.zeros(meas_weights.shape[1], dtype=bool)
    chosen[list(electrodes)] = True
    measures = (meas_weights[:, chosen] != 0).any(axis=1)
    drives = (currents[:, chosen] != 0).any(axis=1)[meas_injection]
    return measures | drives


def excluded_weights(weights: np.ndarray, excluded: np.ndarray) -> np.ndarray:
    """`weights` with the channels in the bool mask `excluded` set to zero."""
    if excluded.all():
        raise ValueError("excluded electrodes: no channel would be left to reconstruct from")
    return np.where(excluded, 0.0, weights)


def noise_weights(reference: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Whitening weights from each channel's estimated noise σ_i (volts, e.g.
    `worker.devices.quality.channel_noise` of the frames) instead of an assumed uniform one.

    Δv_i = (v_i - v_ref,i) / d_i (d_i the `normalisation_divisor`) carries noise σ_i / d_i, so
    w_i = d_i / σ_i whitens it; σ_i is floored at NOISE_FLOOR x its median (a channel that
    happens to look quiet over a few frames must not dominate), and w is scaled to rms 1
    over the channels with a finite estimate. With σ_i equal on all channels this is the model
    weighting with the measured reference in place of the model's. A channel without an
    estimate (nan) gets weight 0.
    """
    noise = np.asarray(noise, dtype=float)
    finite = np.isfinite(noise) & (noise > 0)
    if not finite.any():
        raise ValueError("noise weights: no channel has a noise estimate (too few frames?)")
    sigma = np.maximum(np.where(finite, noise, 1.0), NOISE_FLOOR * np.median(noise[finite]))
    weights = np.where(finite, normalisation_divisor(reference) / sigma, 0.0)
    return weights / np.sqrt(np.mean(weights[finite] ** 2))


@dataclass(frozen=True)
class RangeSpectrum:
    """Left singular vectors and singular values of an M x V matrix, descending."""

    basis: np.ndarray  # U, (M, M): column i is the i-th left singular vector
    singular_values: np.ndarray  # s, (M,)


def gram_spectrum(matrix: np.ndarray) -> RangeSpectrum:
    """U and s of `matrix` from the eigen-decomposition of its Gram matrix (M²V flops)."""
    eigenvalues, vectors = np.linalg.eigh(matrix @ matrix.T)
    order = np.argsort(eigenvalues)[::-1]
    return RangeSpectrum(basis=vectors[:, order],
                         singular_values=np.sqrt(np.clip(eigenvalues[order], 0.0, None)))


class JacobianOperator:
    """A = W^½ J on the V masked voxels, its adjoint and its cached singular system."""

    def __init__(self, jacobian: np.ndarray, weights: np.ndarray,
                 spectrum_path: Path | None = None, variant: str | None = None) -> None:
        self.jacobian = np.asarray(jacobian, dtype=float)
        self.weights = np.asarray(weights, dtype=float)
        if self.weights.shape != (self.jacobian.shape[0],):
            raise ValueError(f"weights: expected shape ({self.jacobian.shape[0]},), "
                             f"got {self.weights.shape}")
        if not np.all(np.isfinite(self.weights)) or np.any(self.weights < 0):
            raise ValueError("weights: must be finite and non-negative")
        self.spectrum_path = spectrum_path
        self.variant = variant
        self._spectrum: RangeSpectrum | None = None

    @classmethod
    def from_reference(cls, jacobian: np.ndarray, reference_voltages: np.ndarray,
                       spectrum_path: Path | None = None) -> JacobianOperator:
        """The operator whitened by `whitening_weights(reference_voltages)`."""
        return cls(jacobian, whitening_weights(reference_voltages), spectrum_path)

    def with_weights(self, weights: np.ndarray) -> JacobianOperator:
        """The same J under other data weights (zero drops a channel); its singular system is
        computed in memory on first use, and `variant` keys its cached matrices."""
        weights = np.asarray(weights, dtype=float)
        variant = content_key({"weights": weights.round(12).tolist()}, VARIANT_KEY_LENGTH)
        return JacobianOperator(self.jacobian, weights, variant=variant)

    @property
    def active(self) -> np.ndarray:
        """(M,) bool: the channels with a non-zero weight (the ones the data term uses)."""
        return self.weights > 0

    @property
    def n_measurements(self) -> int:
        return int(self.jacobian.shape[0])

    @property
    def n_voxels(self) -> int:
        return int(self.jacobian.shape[1])

    @property
    def whitened(self) -> np.ndarray:
        """A = diag(w) J as a new (M, V) array (not kept: the model holds J already)."""
        return self.jacobian * self.weights[:, None]

    def apply(self, values: np.ndarray) -> np.ndarray:
        """A x = W^½ J x for x of shape (V,) or (V, K)."""
        product = self.jacobian @ values
        return product * self._weights_for(product.ndim)

    def adjoint(self, residual: np.ndarray) -> np.ndarray:
        """Aᵀ r = Jᵀ W^½ r for r of shape (M,) or (M, K)."""
        residual = np.asarray(residual)
        return self.jacobian.T @ (residual * self._weights_for(residual.ndim))

    def _weights_for(self, ndim: int) -> np.ndarray:
        """w shaped to scale the rows of an (M,) or (M, K) array."""
        return self.weights.reshape((-1,) + (1,) * (ndim - 1))

    def whiten(self, data: np.ndarray) -> np.ndarray:
        """W^½ Δv for frames Δv of shape (M,) or (T, M)."""
        return np.asarray(data, dtype=float) * self.weights

    @property
    def spectrum(self) -> RangeSpectrum:
        """A's U and s: computed once, read from `spectrum_path` when it holds them."""
        if self._spectrum is None:
            if self.spectrum_path is None:
                self._spectrum = gram_spectrum(self.whitened)
            else:
                arrays = cached_arrays(self.spectrum_path, self._spectrum_arrays)
                self._spectrum = RangeSpectrum(basis=arrays["basis"],
                                               singular_values=arrays["singular_values"])
        return self._spectrum

    def _spectrum_arrays(self) -> dict[str, np.ndarray]:
        spectrum = gram_spectrum(self.whitened)
        return {"basis": spectrum.basis, "singular_values": spectrum.singular_values}

    def range_basis(self, rtol: float = 1e-6) -> np.ndarray:
        """U_r (M, r): the left singular vectors with s_i > rtol · s_max, A's numerical range."""
        s = self.spectrum.singular_values
        return self.spectrum.basis[:, s > rtol * s[0]]
