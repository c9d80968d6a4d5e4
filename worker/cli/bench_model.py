"""`eitmon bench model`: forward-model build times and the Jacobian against pyEIT."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from worker.cli.output import output_file


def model(
    out: Annotated[Path | None, typer.Option(help="write the figures as JSON here")] = None,
    pyeit: Annotated[bool, typer.Option(help="compare with pyEIT (pip install pyeit)")] = True,
) -> None:
    """Cold and cached build of the default model; Jacobian time and agreement vs pyEIT on
    equal meshes."""
    output_file(out)
    from rich.console import Console
    from rich.table import Table

    from worker.bench.model import build_times, jacobian_comparison, scaling_exponents

    with tempfile.TemporaryDirectory() as tmp:
        result: dict = {"build": build_times(tmp)}
    console = Console()
    console.print(f"default model: cold {result['build']['cold_seconds']:.1f} s, "
                  f"cached {result['build']['cached_seconds']:.3f} s")
    if pyeit:
        rows = jacobian_comparison()
        result["jacobian"], result["exponents"] = rows, scaling_exponents(rows)
        table = Table("nodes", "elements", "ours s", "pyEIT s", "pyEIT/ours", "J correlation")
        for r in rows:
            table.add_row(str(r["n_nodes"]), str(r["n_elements"]), f"{r['ours_seconds']:.2f}",
                          f"{r['pyeit_seconds']:.2f}", f"{r['speedup']:.1f}x",
                          f"{r['jacobian_correlation']:.3f}")
        console.print(table)
        ex = result["exponents"]
        console.print(f"time ∝ nodes^b: ours b={ex['ours']:.2f} (x{2 ** ex['ours']:.1f} per "
                      f"doubling), pyEIT b={ex['pyeit']:.2f} (x{2 ** ex['pyeit']:.1f})")
    if out is not None:
        out.write_text(json.dumps(result, indent=2))
