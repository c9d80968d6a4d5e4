"""`eitmon bench faults`: each method with and without the fault handling on simulations with
real-belt faults (docs/real-data.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from worker.cli.bench_quality import _names


def faults(
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for faults.md and faults.json")],
    methods: Annotated[str, typer.Option(help="comma-separated registered methods")]
    = "tikhonov,greit,tv",
    scenarios: Annotated[str, typer.Option(help="comma-separated scenarios")]
    = "none,broken-1,broken-2,belt-1cm,wider-10,drift",
    handlings: Annotated[str, typer.Option(help="comma-separated fault handlings")]
    = "none,exclude,exclude+noise",
    frames: Annotated[int, typer.Option(min=1, help="frames scored per scenario")] = 12,
    duration: Annotated[float, typer.Option(help="seconds of tidal breathing simulated")] = 10.0,
    geometry: Annotated[str, typer.Option(help="the belt's geometry preset or file")]
    = "thorax-1x16",
    mesh_size: Annotated[float, typer.Option(help="model mesh size, m")] = 0.016,
    protocol: Annotated[str, typer.Option(help="protocol preset or file")] = "adjacent",
    grid: Annotated[tuple[int, int, int], typer.Option(help="P R C")] = (12, 24, 24),
    snr_db: Annotated[float, typer.Option(help="measurement SNR in dB")] = 50.0,
    seed: Annotated[int, typer.Option(help="simulation seed")] = 0,
    device: Annotated[str, typer.Option(help="cpu or cuda (for torch methods)")] = "cpu",
    d2ip_option: Annotated[list[str] | None, typer.Option(
        help="D2IP option KEY=VALUE (repeat; default data=real)", metavar="KEY=VALUE")] = None,
) -> None:
    """Simulate the fault scenarios, reconstruct with every method and handling, tabulate."""
    from worker.bench.faults import HANDLINGS, OPTIONS, SCENARIOS, FaultSetup, benchmark
    from worker.cli.reconstruct import parse_options
    from worker.recon.base import available_methods

    method_list = _names(methods, available_methods(), "method(s)")
    scenario_list = _names(scenarios, SCENARIOS, "scenario(s)")
    handling_list = tuple(_names(handlings, HANDLINGS, "handling(s)"))
    setup = FaultSetup(geometry=geometry, mesh_size=mesh_size, protocol=protocol,
                       grid=tuple(grid), duration=duration, frames=frames, snr_db=snr_db,
                       seed=seed)
    options = {**OPTIONS, "d2ip": parse_options(d2ip_option)} if d2ip_option else None
    benchmark(method_list, scenario_list, setup, out, device=device, progress=True,
              options=options, handlings=handling_list)
    typer.echo((out / "faults.md").read_text())
    typer.echo(f"wrote {out / 'faults.md'} and {out / 'faults.json'}")
