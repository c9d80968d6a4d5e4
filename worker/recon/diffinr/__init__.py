"""Diff-INR (seed 2, `diff-inr-generative-regularization.md`): an implicit neural
representation of the conductivity change, regularised by TV (`inr-tv`) or by score distillation
from a 2D diffusion prior (`diff-inr`)."""
