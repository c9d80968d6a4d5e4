"""Fixtures for the deployment checks: the tools, and the manifests rendered once per run."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

# The tests import the helpers as a plain module under any --import-mode (importlib mode does
# not put test directories on sys.path by itself).
sys.path.insert(0, str(Path(__file__).resolve().parent))
from deploy_helpers import DEPLOY, REPO, TARGETS, load_all, need, run  # noqa: E402


@pytest.fixture(scope="session")
def kubectl() -> str:
    return need("kubectl", os.environ.get("EITMON_KUBECTL") or shutil.which("kubectl"))


@pytest.fixture(scope="session")
def compose_cmd() -> list[str]:
    if os.environ.get("EITMON_COMPOSE"):
        return shlex.split(os.environ["EITMON_COMPOSE"])
    docker = shutil.which("docker")
    if docker and run([docker, "compose", "version"], timeout=30).returncode == 0:
        return [docker, "compose"]
    return [need("docker compose / docker-compose", shutil.which("docker-compose"))]


@pytest.fixture(scope="session")
def checkov() -> str:
    default = REPO / ".cache" / "deploy-tools" / "venv" / "bin" / "checkov"
    found = os.environ.get("EITMON_CHECKOV") or (str(default) if default.exists() else None)
    return need("checkov", found or shutil.which("checkov"))


@pytest.fixture(scope="session")
def caddy() -> str:
    return need("caddy", os.environ.get("EITMON_CADDY") or shutil.which("caddy"))


@pytest.fixture(scope="session")
def rendered_text(kubectl: str) -> dict[str, str]:
    """target -> the multi-document YAML that `kubectl kustomize deploy/<target>` prints."""
    out = {}
    for target in TARGETS:
        proc = run([kubectl, "kustomize", str(DEPLOY / target)], timeout=120)
        assert proc.returncode == 0, f"kustomize {target} failed:\n{proc.stderr}"
        out[target] = proc.stdout
    return out


@pytest.fixture(scope="session")
def rendered(rendered_text: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    return {target: load_all(text) for target, text in rendered_text.items()}
