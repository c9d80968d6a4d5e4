"""Diff-INR (seed 2): an implicit neural representation regularised by a diffusion prior."""
