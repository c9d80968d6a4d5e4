"""The one-ward deployment: docker/compose.yaml, its .env example, secrets layout, Caddyfile.

No Docker engine is needed: `compose config` parses, interpolates and validates the file
against the Compose schema; the rest are assertions on the resolved configuration.
"""

from __future__ import annotations

import re
import shutil
from typing import Any

import pytest
import yaml
from deploy_helpers import DOCKER, REPO, run

# Services that run in every deployment, and the profile-gated ones.
ALWAYS = {"redis", "api", "proxy"}
PROFILED = {"worker": "gpu", "worker-cpu": "cpu", "belt": "demo"}
LONG_RUNNING = ALWAYS | {"worker", "worker-cpu"}
SECRETISH = re.compile(r"PASSWORD|SECRET|TOKEN|CREDENTIAL|PRIVATE|API_?KEY", re.I)


@pytest.fixture(scope="module")
def config(compose_cmd: list[str]) -> dict[str, Any]:
    proc = run(compose_cmd + ["--env-file", str(DOCKER / ".env.example"),
                              "-f", str(DOCKER / "compose.yaml"), "config"], timeout=120)
    assert proc.returncode == 0, f"compose config failed:\n{proc.stderr}"
    return yaml.safe_load(proc.stdout)


def volumes(svc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """target -> {type, source, read_only}; compose v1 prints "src:dst:mode", v2 mappings."""
    out = {}
    for v in svc.get("volumes", []):
        if isinstance(v, str):
            source, target, *mode = v.split(":")
            kind = "bind" if source.startswith(("/", ".")) else "volume"
            v = {"type": kind, "source": source, "target": target,
                 "read_only": mode == ["ro"]}
        out[v["target"]] = v
    return out


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_compose_config_is_valid_and_has_the_services(config):
    assert set(config["services"]) == ALWAYS | set(PROFILED)
    for name, profile in PROFILED.items():
        assert config["services"][name]["profiles"] == [profile]
    for name in ALWAYS:
        assert not config["services"][name].get("profiles"), name


def test_missing_password_is_an_error(compose_cmd, tmp_path):
    env = tmp_path / "empty.env"
    env.write_text("")
    proc = run(compose_cmd + ["--env-file", str(env), "-f", str(DOCKER / "compose.yaml"),
                              "config"], timeout=120, env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode != 0
    assert "REDIS_PASSWORD" in proc.stderr


def test_every_service_is_hardened(config):
    for name, svc in config["services"].items():
        assert svc.get("read_only") is True, name
        assert svc.get("cap_drop") == ["ALL"] and not svc.get("cap_add"), name
        assert "no-new-privileges:true" in svc.get("security_opt", []), name
        assert not svc.get("privileged"), name
        assert svc.get("network_mode") is None, name
        assert "limits" in svc.get("deploy", {}).get("resources", {}), name
        for volume in volumes(svc).values():
            assert "docker.sock" not in str(volume["source"]), name
            if volume["type"] == "bind":
                assert volume["read_only"], f"{name}: bind mounts are read-only"


def test_long_running_services_restart_and_report_health(config):
    for name in LONG_RUNNING:
        svc = config["services"][name]
        assert svc["restart"] == "unless-stopped", name
        assert svc["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name
    assert config["services"]["belt"]["restart"] == "no"


def test_only_the_proxy_publishes_ports(config):
    published = {n for n, s in config["services"].items() if s.get("ports")}
    assert published == {"proxy"}
    ports = {str(p["target"]) if isinstance(p, dict) else str(p).rsplit(":", 1)[-1]
             for p in config["services"]["proxy"]["ports"]}
    assert ports == {"8443", "8080"}
    assert config["networks"]["backend"].get("internal") is True
    assert set(config["services"]["proxy"]["networks"]) == {"frontend"}
    assert set(config["services"]["redis"]["networks"]) == {"backend"}


def test_workers_gpu_reservation_and_checkpoint_time(config):
    gpu = config["services"]["worker"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"capabilities": ["gpu"], "count": 1, "driver": "nvidia"}]
    assert gpu["build"]["target"] == "worker-gpu"
    cpu = config["services"]["worker-cpu"]
    assert "reservations" not in cpu["deploy"]["resources"]
    assert cpu["build"]["target"] == "worker-cpu"
    for svc in (gpu, cpu):
        grace = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", svc["stop_grace_period"])
        assert grace, svc["stop_grace_period"]
        assert int(grace[1] or 0) * 60 + int(grace[2] or 0) >= 60, svc["stop_grace_period"]
        env = svc["environment"]
        mounts = set(volumes(svc))
        assert {env["EITMON_CACHE_DIR"], env["EITMON_CHECKPOINT_DIR"]} <= mounts
        assert "secrets" not in svc, "least privilege: the worker never checks tokens"
        assert "/tmp" in " ".join(svc["tmpfs"])


def test_redis_has_aof_password_and_a_volume(config):
    redis = config["services"]["redis"]
    assert redis["user"].split(":")[0] not in ("0", "root")
    script = " ".join(redis["command"])
    assert "requirepass" in script and "--requirepass" not in script
    targets = volumes(redis)
    assert targets["/data"]["type"] == "volume"
    assert targets["/etc/valkey/valkey.conf"]["source"] == str(DOCKER / "valkey.conf")
    conf = (DOCKER / "valkey.conf").read_text()
    assert re.search(r"(?m)^appendonly yes$", conf)
    assert re.search(r"(?m)^include /tmp/valkey-auth.conf$", conf)
    assert re.search(r"(?m)^maxmemory-policy noeviction$", conf)


def test_api_reads_the_jwt_secret_from_a_docker_secret(config):
    api = config["services"]["api"]
    assert api["environment"]["EITMON_JWT_SECRET_FILE"] == "/run/secrets/jwt_secret"
    assert "EITMON_JWT_SECRET" not in api["environment"]
    assert [s["source"] for s in api["secrets"]] == ["jwt_secret"]
    assert config["secrets"]["jwt_secret"]["file"].startswith(str(DOCKER / "secrets"))
    assert "FORWARDED_ALLOW_IPS" in api["environment"]
    assert not api.get("ports")


def test_no_secret_literals_in_compose(raw):
    """Secret-looking variables come from interpolation (docker/.env) or files, never literals."""
    def walk(node: Any, path: str = "") -> list[str]:
        bad = []
        if isinstance(node, dict):
            for k, v in node.items():
                secretish = SECRETISH.search(str(k)) and not str(k).endswith("_FILE")
                if isinstance(v, (str, int)) and secretish:
                    if not re.fullmatch(r"\$\{[A-Z_]+(:?[?-][^}]*)?\}", str(v)):
                        bad.append(f"{path}.{k}")
                bad += walk(v, f"{path}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                bad += walk(v, f"{path}[{i}]")
        elif isinstance(node, str) and re.search(r"://[^/\s:@]*:(?!\$\{)[^@\s]+@", node):
            bad.append(f"{path}: credential in a URL")
        return bad

    assert not walk(raw)


def test_env_example_lists_every_variable_compose_uses():
    text = (DOCKER / "compose.yaml").read_text()
    used = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", text))
    example = (DOCKER / ".env.example").read_text()
    declared = set(re.findall(r"(?m)^([A-Z_][A-Z0-9_]*)=", example))
    assert used <= declared, f"add to docker/.env.example: {sorted(used - declared)}"
    assert "COMPOSE_PROFILES" in declared


def test_real_config_and_secrets_are_git_ignored():
    git = shutil.which("git")
    if git is None or run([git, "rev-parse", "--git-dir"]).returncode != 0:
        pytest.fail("needs the git checkout (CI runs in a clone)")
    for path in ("docker/.env", "docker/secrets/jwt_secret.txt",
                 "docker/secrets/demo_device_token.txt", "docker/certs/tls.key"):
        assert run([git, "check-ignore", "-q", path]).returncode == 0, f"{path} is not ignored"
    for path in ("docker/.env.example", "docker/secrets/README", "docker/certs/README"):
        assert run([git, "check-ignore", "-q", path]).returncode == 1, f"{path} is ignored"


@pytest.mark.parametrize("tls", ["internal", "/etc/caddy/certs/tls.crt /etc/caddy/certs/tls.key"])
def test_caddyfile_adapts(caddy, tls, tmp_path):
    proc = run([caddy, "adapt", "--config", str(DOCKER / "Caddyfile"), "--adapter", "caddyfile"],
               timeout=60, env={"EITMON_DOMAIN": "eitmon.ward.example", "EITMON_TLS": tls,
                                "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path),
                                "XDG_CONFIG_HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "api:8000" in out
    assert '"eitmon.ward.example"' in out
    assert ("load_files" in out) == (tls != "internal")


def test_proxy_image_is_unprivileged_and_bakes_the_caddyfile():
    text = (DOCKER / "Dockerfile.proxy").read_text()
    assert "COPY --chown=root:root --chmod=0444 docker/Caddyfile /etc/caddy/Caddyfile" in text
    assert re.search(r"(?m)^USER 10002:10002$", text)
    caddyfile = (DOCKER / "Caddyfile").read_text()
    assert re.search(r"(?m)^\s*https_port 8443$", caddyfile)
    assert (REPO / "docker" / "certs" / "README").exists()
