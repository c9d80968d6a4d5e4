"""The simulated training frames of `d2ip-live`'s start."""

from __future__ import annotations

import numpy as np

from worker.forward.model import ForwardModel
from worker.recon.live.frames import training_frames


def test_frames_are_reproducible_varied_and_follow_the_linear_model(
        coarse_model: ForwardModel) -> None:
    a = training_frames(coarse_model, 6, seed=1)
    b = training_frames(coarse_model, 6, seed=1)
    other = training_frames(coarse_model, 6, seed=2)
    assert a.dv.shape == (6, coarse_model.n_measurements)
    assert a.truth.shape == (6, int(coarse_model.mask.sum()))
    np.testing.assert_array_equal(a.dv, b.dv)
    assert not np.allclose(a.truth, other.truth)
    assert np.isfinite(a.dv).all() and np.isfinite(a.truth).all()
    # every frame holds a change, and no two frames are the same thorax and breath
    assert (np.abs(a.truth).max(axis=1) > 0.05).all()
    assert len({round(float(t.sum()), 4) for t in a.truth}) == 6
    # y = J x + noise at 40-60 dB below the rms reference voltage: whitened, the noise has
    # an rms between 1e-3 and 1e-2 (sampling spread of M = 928 values: a few per cent)
    noise = (a.dv - a.truth @ coarse_model.jacobian.T) * coarse_model.operator.weights
    rms = np.sqrt(np.mean(noise**2, axis=1))
    assert (rms > 0.9e-3).all() and (rms < 1.1e-2).all()
