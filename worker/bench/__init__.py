"""Benchmarks behind `eitmon bench`; each module measures one thing against a baseline."""
