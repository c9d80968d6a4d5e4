"""Storage: the cache root, content keys, the atomic write and read-or-build."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from worker import storage


def test_cache_dir_from_override_environment_or_home(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    monkeypatch.setenv("EITMON_CACHE_DIR", str(tmp_path / "env"))
    assert storage.cache_dir() == tmp_path / "env"
    assert storage.cache_dir(tmp_path / "given") == tmp_path / "given"
    monkeypatch.delenv("EITMON_CACHE_DIR")
    assert storage.cache_dir() == Path.home() / ".cache" / "eitmon"


def test_content_keys_are_stable_and_order_independent() -> None:
    spec = {"grid": [8, 16, 16], "geometry": {"preset": "thorax-2x16", "mesh_size": 0.016}}
    reordered = {"geometry": {"mesh_size": 0.016, "preset": "thorax-2x16"}, "grid": [8, 16, 16]}
    assert storage.content_key(spec) == storage.content_key(reordered)
    # stable across processes and releases: cached files keep their names
    assert storage.content_key({"a": 1}) == "f9d86028c6e0d64e2251"
    assert len(storage.content_key(spec, 16)) == 16
    assert storage.content_key(spec) != storage.content_key({**spec, "grid": [8, 16, 17]})


def test_atomic_write_replaces_the_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "value.txt"
    storage.write_atomic(path, lambda temporary: temporary.write_text("one"))
    storage.write_atomic(path, lambda temporary: temporary.write_text("two"))
    assert path.read_text() == "two"
    assert sorted(p.name for p in path.parent.iterdir()) == ["value.txt"]


def test_a_failing_writer_leaves_no_partial_file_and_keeps_the_old_one(tmp_path: Path) -> None:
    path = tmp_path / "value.npz"
    storage.write_atomic(path, lambda temporary: np.savez(temporary, x=np.arange(3)))

    def fail_halfway(temporary: Path) -> None:
        temporary.write_bytes(b"PK partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        storage.write_atomic(path, fail_halfway)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["value.npz"]
    np.testing.assert_array_equal(storage.read_arrays(path)["x"], np.arange(3))
    with pytest.raises(RuntimeError):
        storage.write_atomic(tmp_path / "new.npz", fail_halfway)
    assert not (tmp_path / "new.npz").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["value.npz"]


def test_read_or_build_builds_once(tmp_path: Path) -> None:
    path = tmp_path / "arrays.npz"
    builds: list[int] = []

    def build() -> dict[str, np.ndarray]:
        builds.append(1)
        return {"x": np.arange(4.0)}

    first = storage.cached_arrays(path, build)
    second = storage.cached_arrays(path, build)
    assert len(builds) == 1
    np.testing.assert_array_equal(second["x"], first["x"])


def test_an_unreadable_file_is_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "arrays.npz"
    path.write_bytes(b"not an archive")
    assert storage.read_arrays(path) is None
    assert storage.read_arrays(tmp_path / "absent.npz") is None
    arrays = storage.cached_arrays(path, lambda: {"x": np.ones(2)})
    np.testing.assert_array_equal(storage.read_arrays(path)["x"], arrays["x"])
