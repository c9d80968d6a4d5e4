"""Reconstruction worker and the EIT science (forward model, simulation, methods).

Importing this package is cheap and torch-free. The session schema (geometry, protocol and
grid specs) lives in `service.contract`, which the API and the worker share.
"""
