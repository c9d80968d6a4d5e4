"""`eitmon train ...`: training of the learned parts that ship with the package.

Each trainer lives in its own module and registers one command on `app` below.
"""

from __future__ import annotations

import typer

from worker.cli import train_prior

app = typer.Typer(help="Train the learned parts (seeded, with progress).", no_args_is_help=True)
app.command("diffusion-prior")(train_prior.diffusion_prior)
