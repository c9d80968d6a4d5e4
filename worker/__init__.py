"""Reconstruction worker and the EIT science (forward model, simulation, methods).

Importing this package is cheap and torch-free: the API process imports the spec modules
(`worker.forward.geometry`, `worker.forward.protocol`, `worker.forward.grid`) from here.
"""
