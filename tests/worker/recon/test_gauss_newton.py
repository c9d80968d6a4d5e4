"""The Gauss-Newton steps' acceptance rule (`worker.recon.gauss_newton`)."""

from __future__ import annotations

import numpy as np

from worker.forward.linearisation import Relinearised, misfit
from worker.forward.model import ForwardModel
from worker.recon.gauss_newton import gauss_newton


class Fake:
    """A method whose image is u and whose fit jumps to the next of `moves`."""

    def __init__(self, start: np.ndarray, moves: list[np.ndarray]) -> None:
        self.u, self.moves, self.fits = start, moves, 0

    def fit(self, relinearised: Relinearised) -> int:
        self.u = self.moves[self.fits]
        self.fits += 1
        return 10

    def restore(self, u: np.ndarray) -> None:
        self.u = u


def run(model: ForwardModel, dv: np.ndarray, fake: Fake, steps: int) -> int:
    return gauss_newton(model, dv, steps, lambda: fake.u, fake.fit, lambda: fake.u,
                        fake.restore)


def test_steps_that_lower_the_misfit_are_kept(coarse_model: ForwardModel,
                                              insulator: tuple[np.ndarray, np.ndarray]) -> None:
    truth, dv = insulator
    fake = Fake(np.zeros_like(truth), [0.5 * truth, truth])
    assert run(coarse_model, dv, fake, 2) == 20
    assert fake.u is fake.moves[1] and misfit(coarse_model, dv, fake.u) < 1e-20


def test_a_step_that_raises_the_misfit_is_undone(coarse_model: ForwardModel,
                                                 insulator: tuple[np.ndarray, np.ndarray]
                                                 ) -> None:
    truth, dv = insulator
    half, wrong = 0.5 * truth, -2.0 * truth
    fake = Fake(np.zeros_like(truth), [half, wrong, truth])
    assert run(coarse_model, dv, fake, 3) == 20  # the third fit never runs
    assert fake.u is half and fake.fits == 2
    last = Fake(np.zeros_like(truth), [half, wrong])  # ... also when it was the last step
    assert run(coarse_model, dv, last, 2) == 20
    assert last.u is half


def test_no_steps_no_solves(coarse_model: ForwardModel) -> None:
    def never() -> np.ndarray:
        raise AssertionError("no step asks for the image")

    assert gauss_newton(coarse_model, np.zeros(coarse_model.n_measurements), 0, never,
                        lambda lin: 1, lambda: None, lambda state: None) == 0
