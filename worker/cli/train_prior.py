"""`eitmon train diffusion-prior`: the shape prior of Diff-INR (seed 2, section 4.2).

Writes to DIR: prior.safetensors (the weights; copy it to worker/recon/diffinr/ to ship it),
loss.json and loss.png (the training curve), samples.png (images drawn from the trained model
beside training images).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from worker.cli.output import output_file


def _loss_figure(losses: list[float], path: Path) -> None:
    """The per-step loss and its 100-step running mean, log scale."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    window = min(100, len(losses))
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
    ax.plot(losses, lw=0.5, alpha=0.4, label="minibatch")
    ax.plot(np.arange(window - 1, len(losses)), smooth, label=f"mean of {window}")
    ax.set(yscale="log", xlabel="step", ylabel="ε-MSE (eq. 13)", title="diffusion prior training")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _grid_figure(rows: list[tuple[str, np.ndarray]], path: Path) -> None:
    """Rows of images (N, 1, H, W) in [-1, 1], one labelled row each."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = max(len(images) for _, images in rows)
    fig = Figure(figsize=(cols * 0.8, len(rows) * 0.9))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), cols, squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c, ax in enumerate(axes[r]):
            ax.set_axis_off()
            if c < len(images):
                ax.imshow(images[c, 0], cmap="gray", vmin=-1, vmax=1)
        axes[r][0].set_title(label, loc="left", fontsize=8)
    fig.savefig(path, dpi=100)


def diffusion_prior(
    out: Annotated[Path, typer.Option(help="folder for the weights, loss curve and samples")],
    seed: Annotated[int, typer.Option(help="seeds the data set, initialisation and batches")] = 0,
    images: Annotated[int, typer.Option(help="training images (section 4.2 data set)")] = 10000,
    steps: Annotated[int, typer.Option(help="Adam steps")] = 1200,
    batch: Annotated[int, typer.Option(help="images per step")] = 32,
    lr: Annotated[float, typer.Option(help="Adam learning rate")] = 1e-3,
    samples: Annotated[int, typer.Option(help="images to draw from the trained model")] = 16,
) -> None:
    """Train the 32x32 diffusion prior on random shapes; ~20 min on 2 idle CPU cores."""
    output_file(out / "prior.safetensors")
    import torch
    from tqdm import tqdm

    from worker.recon.diffinr.diffusion import fit, sample, vp_schedule
    from worker.recon.diffinr.score_net import RESOLUTION, save_weights, score_net
    from worker.recon.diffinr.shapes import ShapeSpec, shape_images

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    data = torch.from_numpy(shape_images(images, seed, ShapeSpec(size=RESOLUTION)))
    net, schedule = score_net(), vp_schedule()
    losses: list[float] = []
    with tqdm(total=steps, desc="diffusion prior", unit="step", file=sys.stderr,
              mininterval=1.0 if sys.stderr.isatty() else 30.0) as bar:
        def on_step(step: int, loss: float) -> None:
            losses.append(loss)
            bar.update()
            if step % 50 == 0:
                bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}", refresh=False)

        net = fit(net, schedule, data, steps=steps, batch=batch, lr=lr, generator=generator,
                  on_step=on_step)
    train_seconds = time.perf_counter() - started
    args = {"seed": seed, "images": images, "steps": steps, "batch": batch, "lr": lr}
    save_weights(net, out / "prior.safetensors",
                 {"schedule": dict(schedule.config), "train": args,
                  "parameters": sum(p.numel() for p in net.parameters())})
    (out / "loss.json").write_text(json.dumps(
        {"train": args, "seconds": train_seconds, "loss": losses}, indent=1))
    _loss_figure(losses, out / "loss.png")
    drawn = sample(net, schedule, samples, generator).clamp(-1, 1).numpy()
    _grid_figure([("training images", data[:samples].numpy()), ("drawn from the prior", drawn)],
                 out / "samples.png")
    typer.echo(f"{steps} steps in {train_seconds / 60:.1f} min; final loss (mean of last 100) "
               f"{np.mean(losses[-100:]):.4f}; wrote {out}")
