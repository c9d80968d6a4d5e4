"""Fixtures for the deployment checks: the tools, and the manifests rendered once per run."""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

# The tests import the helpers as a plain module under any --import-mode (importlib mode does
# not put test directories on sys.path by itself).
sys.path.insert(0, str(Path(__file__).resolve().parent))
from deploy_helpers import (  # noqa: E402
    DEPLOY,
    DOCKER,
    PASSWORD,
    REPO,
    TARGETS,
    load_all,
    need,
    run,
)


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


@pytest.fixture()
def server_conf(tmp_path: Path) -> tuple[Path, Path, str]:
    """(valkey.conf for the test, its data directory, URL)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = tmp_path / "data"
    data.mkdir()
    auth = tmp_path / "valkey-auth.conf"
    auth.write_text(f"requirepass {PASSWORD}\n")
    conf = (DOCKER / "valkey.conf").read_text()
    for old, new in (("dir /data", f"dir {data}"), ("port 6379", f"port {port}"),
                     ("bind * -::*", "bind 127.0.0.1"),
                     ("/tmp/valkey-auth.conf", str(auth))):
        assert old in conf, old
        conf = conf.replace(old, new)
    path = tmp_path / "valkey.conf"
    path.write_text(conf)
    return path, data, f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
