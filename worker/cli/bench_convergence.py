"""`eitmon bench convergence`: data loss vs iteration of the D2IP variants (paper Fig. 5b)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def convergence(
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for convergence.json, "
                                                         "convergence.png and the recording")],
    case: Annotated[str, typer.Option(help="simulation case")] = "healthy-deep-breath",
    frames: Annotated[int, typer.Option(min=2, help="frames of the simulated case")] = 20,
    frame: Annotated[int, typer.Option(min=1, help="target frame (1-based)")] = 2,
    iterations: Annotated[int, typer.Option(min=1, help="Adam iterations on the target frame")]
    = 1800,
    upws_frame: Annotated[int, typer.Option(help="UPWS frame (1-based; 0: the last)")] = 0,
    snr_db: Annotated[float, typer.Option(help="measurement SNR in dB")] = 50.0,
    seed: Annotated[int, typer.Option(help="noise seed")] = 0,
    geometry: Annotated[str, typer.Option(help="geometry preset or file")] = "thorax-2x16",
    grid: Annotated[tuple[int, int, int], typer.Option(help="P R C")] = (16, 32, 32),
    device: Annotated[str, typer.Option(help="cpu, cuda or auto")] = "cpu",
    threads: Annotated[int, typer.Option(min=1, help="torch threads")] = 1,
    option: Annotated[list[str] | None, typer.Option(
        help="method option KEY=VALUE for every variant, e.g. lam=0.01 (repeat)",
        metavar="KEY=VALUE")] = None,
) -> None:
    """Data loss vs iteration of dip, dip+4D-TV, d2ip-no-upws, d2ip-no-tpp, d2ip on one frame.

    Each variant reaches the target frame as a session would (UPWS, earlier frames), runs the
    same iterations on it, and the iterations each needs to reach cold DIP's final data loss
    are reported (paper Fig. 5b).
    """
    from rich.console import Console
    from rich.table import Table

    from worker.bench.convergence import TARGETS, Convergence, benchmark
    from worker.bench.quality import Setup
    from worker.cli.reconstruct import parse_options
    from worker.simulation import CASES

    if case not in CASES:
        typer.secho(f"error: unknown case {case}; available: {', '.join(CASES)}", fg="red",
                    err=True)
        raise typer.Exit(2)
    if frame > frames or upws_frame > frames or upws_frame < 0:
        typer.secho(f"error: --frame and --upws-frame must lie in 1..{frames}", fg="red",
                    err=True)
        raise typer.Exit(2)
    setup = Setup(frames=frames, snr_db=snr_db, seed=seed, geometry=geometry, grid=list(grid))
    conv = Convergence(case=case, frame=frame - 1, iterations=iterations,
                       upws_frame=upws_frame - 1, options=parse_options(option or []))
    report = benchmark(setup, conv, out, device=device, threads=threads, progress=True)
    targets = report["targets"]
    table = Table(title=f"Convergence on {case} frame {frame} ({report['date']}); targets: "
                        + ", ".join(f"{t} {v:.4g}" for t, v in targets.items()))
    for title in ("variant", "data loss at 0", f"at {iterations}",
                  *(f"iterations to {t}" for t in targets), "iterations before",
                  "s on frame"):
        table.add_column(title, justify="right")
    for r in report["runs"]:
        table.add_row(r["variant"], f"{r['data_loss'][0]:.4g}", f"{r['data_loss'][-1]:.4g}",
                      *("never" if k is None else str(k) for k in r["iterations_to"].values()),
                      str(r["iterations_before"]), f"{r['seconds']:.1f}")
    console = Console()
    console.print(table)
    for target, ratio in report["ratios"].items():
        what, cold = TARGETS[target]
        console.print(f"d2ip / {cold} iterations to {what}: "
                      + (f"{ratio:.3f}" if ratio is not None else "undefined (never reached)"))
    typer.echo(f"wrote {out / 'convergence.json'} and {out / 'convergence.png'}")
