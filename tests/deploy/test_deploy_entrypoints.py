"""The container entry points run outside Docker too: `eitmon api` and `eitmon worker` start
against a real password-protected valkey-server (docker/valkey.conf) with exactly the
environment variables the rendered Kubernetes manifests give them, secrets and cluster-only
values (service DNS name, mounted secret paths, pod name) replaced by local equivalents."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from deploy_helpers import by_kind, valkey

from worker.runtime.local import free_port, spawn, wait_for


def _container(docs: list[dict[str, Any]], deployment: str) -> dict[str, Any]:
    return by_kind(docs, "Deployment")[deployment]["spec"]["template"]["spec"]["containers"][0]


def _local(command: list[str]) -> list[str]:
    """The image's PATH has the console script; here it is beside this interpreter."""
    return [shutil.which(command[0]) or str(Path(sys.executable).with_name(command[0])),
            *command[1:]]


def _container_env(docs: list[dict[str, Any]], deployment: str, local: dict[str, str]
                   ) -> tuple[list[str], dict[str, str]]:
    """(command, env) of a Deployment's first container, as the kubelet would resolve them."""
    spec = _container(docs, deployment)
    config = {}
    for src in spec.get("envFrom", []):
        name = src["configMapRef"]["name"]
        config.update(by_kind(docs, "ConfigMap")[name]["data"])
    env = {k: local.get(k, v) for k, v in config.items()}
    for item in spec.get("env", []):
        name = item["name"]
        if name in local:
            env[name] = local[name]
        elif "value" in item:
            env[name] = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], item["value"])
        else:
            raise AssertionError(f"{deployment}: no local value for {name} ({item})")
    command = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in spec["command"]]
    return _local(command), env


def test_api_and_worker_start_with_the_manifest_environment(rendered, server_conf,
                                                            tmp_path: Path) -> None:
    conf, _, url = server_conf
    password = url.split(":")[2].split("@")[0]
    secret = tmp_path / "jwt-secret"
    secret.write_text("s" * 48)
    port = free_port()
    docs = rendered["base"]
    local = {"REDIS_PASSWORD": password, "EITMON_JWT_SECRET_FILE": str(secret),
             "EITMON_CACHE_DIR": str(tmp_path / "cache"),
             "EITMON_CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
             "EITMON_WORKER_NAME": "worker-pod-0", "HOME": str(tmp_path)}
    api_cmd, api_env = _container_env(docs, "eitmon-api", local)
    worker_cmd, worker_env = _container_env(docs, "eitmon-worker", local)
    redis_host = url.split("@")[1]
    for env in (api_env, worker_env):
        env["REDIS_URL"] = env["REDIS_URL"].replace("eitmon-redis:6379", redis_host.split("/")[0])
    api_cmd = [a.replace("0.0.0.0", "127.0.0.1").replace("8000", str(port)) for a in api_cmd]
    with valkey(conf, url):
        api = spawn("api", api_cmd, api_env, quiet=True)
        worker = spawn("worker", worker_cmd, worker_env, quiet=True)
        try:
            base = f"http://127.0.0.1:{port}"
            with httpx.Client(trust_env=False, timeout=2.0) as client:
                wait_for(api, lambda: client.get(f"{base}/healthz").status_code == 200, 60,
                         httpx.HTTPError)
                assert client.get(f"{base}/readyz").status_code == 200
                assert client.get(f"{base}/metrics").status_code == 200
            time.sleep(3.0)
            assert worker.process.poll() is None, "the worker exited at start"
            # the probes run in the worker's container: same environment
            probes = _container(docs, "eitmon-worker")
            liveness = _local(probes["livenessProbe"]["exec"]["command"])
            assert _local(probes["startupProbe"]["exec"]["command"]) == liveness

            def alive() -> bool:
                return subprocess.run(liveness, env={**os.environ, **worker_env},
                                      capture_output=True,
                                      timeout=30).returncode == 0

            wait_for(worker, alive, 120, subprocess.TimeoutExpired)
        finally:
            assert worker.stop(signal.SIGTERM, timeout=60) == 0
            # uvicorn shuts down gracefully, then re-raises the signal it caught
            assert api.stop(signal.SIGTERM, timeout=30) in (0, -signal.SIGTERM)
