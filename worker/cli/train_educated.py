"""`eitmon train educated`: Educated DIP's supervised pretraining (seed 3, stage 1)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def educated(
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for weights.pt, curve.json "
                                                         "and curve.png")],
    steps: Annotated[int | None, typer.Option(min=1, help="Adam steps (one sample each)")]
    = None,
    samples: Annotated[int | None, typer.Option(min=2, help="linearised samples")] = None,
    fem_samples: Annotated[int | None, typer.Option(min=0, help="nonlinear FEM samples")]
    = None,
    seed: Annotated[int, typer.Option(help="seed of the data, the init and the order")] = 0,
    geometry: Annotated[str, typer.Option(help="geometry preset or file")] = "thorax-2x16",
    protocol: Annotated[str, typer.Option(help="protocol preset or file")] = "skip4",
    grid: Annotated[tuple[int, int, int], typer.Option(help="P R C")] = (16, 32, 32),
    threads: Annotated[int, typer.Option(min=1, help="torch and kernel threads")] = 1,
    cache: Annotated[bool, typer.Option(help="also store the weights where `edip` finds "
                                              "them (the weights cache)")] = True,
) -> None:
    """Pretrain D2IP's network on simulated thoraxes (preview in, truth out); seeded.

    The defaults are the configuration whose weights ship with the package."""
    import dataclasses

    from worker.forward import load_model
    from worker.recon.educated.train import TrainConfig, train, write_outputs
    from worker.recon.educated.weights import default_config, store_weights

    base = default_config()
    data = dataclasses.replace(base.data, seed=seed,
                               **{k: v for k, v in (("samples", samples),
                                                    ("fem_samples", fem_samples))
                                  if v is not None})
    config: TrainConfig = dataclasses.replace(base, data=data, seed=seed,
                                              **({"steps": steps} if steps else {}))
    model = load_model(geometry=geometry, protocol=protocol, grid=grid, progress=True)
    result = train(model, config, progress=True, threads=threads)
    paths = write_outputs(result, out)
    if cache:
        paths["cache"] = store_weights(model, config, result)
    curve = result.curve
    typer.echo(f"final validation loss (linear): {curve['validation']['linear'][-1]:.4g}; "
               f"Tikhonov preview: {curve['preview']['linear']:.4g}")
    typer.echo("wrote " + ", ".join(str(p) for p in paths.values()))
