"""The reconstruction worker's runtime: leases, sessions, checkpoints, the main loop.

See docs/worker.md. The Redis contract it follows lives in `service/contract/`.
"""
