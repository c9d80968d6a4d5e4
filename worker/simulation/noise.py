"""Gaussian measurement noise at a requested SNR.

SNR (dB) = 20 log10(rms(v) / σ_n): one noise level for every channel and frame, set by the
root-mean-square of the clean voltages over the whole recording, like a front end's fixed
noise floor.
"""

from __future__ import annotations

import numpy as np


def noise_scale(clean: np.ndarray, snr_db: float) -> float:
    """σ_n for the requested SNR."""
    return float(np.sqrt(np.mean(clean**2)) * 10 ** (-snr_db / 20))


def add_noise(clean: np.ndarray, snr_db: float | None, rng: np.random.Generator
              ) -> tuple[np.ndarray, float]:
    """Noisy copy of `clean` and the noise s.d. used (0 when snr_db is None: noiseless)."""
    if snr_db is None:
        return clean.copy(), 0.0
    scale = noise_scale(clean, snr_db)
    return clean + rng.normal(0.0, scale, clean.shape), scale


def measured_snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(clean**2)) / np.sqrt(np.mean((noisy - clean)**2))))
