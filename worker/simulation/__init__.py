"""Breathing-thorax simulation: phantoms, cases, noise, and `simulate` into a Recording."""

from worker.simulation.cases import CASES
from worker.simulation.simulate import simulate

__all__ = ["CASES", "simulate"]
