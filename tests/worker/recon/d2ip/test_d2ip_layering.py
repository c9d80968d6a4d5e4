"""The paper modules of D2IP never import the CPU speed machinery (`d2ip/cpu/`); only
`variants.py`, where the execution strategy is chosen, does."""

from __future__ import annotations

import ast
from pathlib import Path

import worker.recon.d2ip as d2ip

PACKAGE = Path(d2ip.__file__).parent
CHOOSER = "variants.py"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):  # TYPE_CHECKING blocks included
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
    return names


def test_paper_modules_do_not_import_cpu() -> None:
    paper = [p for p in PACKAGE.glob("*.py") if p.name != CHOOSER]
    assert {p.name for p in paper} >= {"network.py", "prior.py", "data_term.py", "objective.py",
                                       "optimise.py", "reconstructor.py", "warm_start.py"}
    for path in paper:
        bad = {n for n in _imports(path) if n.startswith("worker.recon.d2ip.cpu")}
        assert not bad, f"{path.name} imports {sorted(bad)}"
    assert any(n.startswith("worker.recon.d2ip.cpu") for n in _imports(PACKAGE / CHOOSER))
