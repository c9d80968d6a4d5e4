"""The dependency rules between the packages, checked on the source (docs/service-api.md,
"The contract package").

import-linter (`lint-imports`, contracts in pyproject.toml) checks the same rules in CI but
ignores imports under `if TYPE_CHECKING:`; this test reads every import statement, including
those and the ones inside functions:

- `service/` (the contract included) never imports `worker/`;
- `worker/` imports from `service/` only `service.contract`;
- `service.contract` imports nothing of `service/` outside itself, and never torch or gmsh;
- no import cycles, between the top-level packages nor between modules.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOTS = ("service", "worker")
PACKAGES = ("service.contract", "worker.forward", "worker.recon", "worker.runtime",
            "worker.cli", "worker.bench", "worker.simulation", "worker.ventilation",
            "worker.devices")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for root in ROOTS for p in sorted((REPO / root).rglob("*.py"))}


MODULES = _modules()


def _imported(module: str, path: Path) -> Iterator[str]:
    """Every module that `module` imports anywhere in its source (absolute names)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            submodules = [f"{base}.{alias.name}" for alias in node.names
                          if f"{base}.{alias.name}" in MODULES]
            if len(submodules) < len(node.names):  # names defined in `base` itself
                yield base
            yield from submodules


def _graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (a package's `__init__` counts as a module)."""
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        graph[module] = {name for name in _imported(module, path)
                         if name in MODULES and name != module}
    return graph


def _external(module: str) -> set[str]:
    return {name.split(".")[0] for name in _imported(module, MODULES[module])
            if name.split(".")[0] not in ROOTS}


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _package(module: str) -> str:
    """The package a module belongs to (PACKAGES); a module outside them (`worker.storage`,
    `service.app`) stands for itself."""
    return next((p for p in PACKAGES if _inside(module, p)), module)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


GRAPH = _graph()


def _edges(source: str, target: str) -> list[str]:
    return sorted(f"{m} -> {t}" for m, targets in GRAPH.items() if _inside(m, source)
                  for t in targets if _inside(t, target))


def test_the_service_never_imports_the_worker() -> None:
    assert _edges("service", "worker") == []


def test_the_worker_imports_only_the_contract_of_the_service() -> None:
    edges = [e for e in _edges("worker", "service")
             if not _inside(e.partition(" -> ")[2], "service.contract")]
    assert edges == []


def test_the_contract_stands_alone_and_is_torch_free() -> None:
    edges = [e for e in _edges("service.contract", "service")
             if not _inside(e.partition(" -> ")[2], "service.contract")]
    assert edges == []
    heavy = {m: _external(m) & {"torch", "gmsh"} for m in MODULES
             if _inside(m, "service")}
    assert {m: h for m, h in heavy.items() if h} == {}


def test_no_cycles_between_packages() -> None:
    packages: dict[str, set[str]] = {}
    for module, targets in GRAPH.items():
        packages.setdefault(_package(module), set()).update(
            _package(t) for t in targets if _package(t) != _package(module))
    assert _cycles(packages) == []


def test_no_cycles_between_modules() -> None:
    assert _cycles(GRAPH) == []


@pytest.mark.parametrize("package", PACKAGES)
def test_every_package_is_present(package: str) -> None:
    """The rules above name real packages (a rename must update them)."""
    assert package in MODULES
