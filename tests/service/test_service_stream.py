"""Live volumes over WebSocket, fed by results published the way the worker will publish them."""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import redis
from prometheus_client import REGISTRY
from websockets.sync.client import ClientConnection, connect

from service import wire
from service.contract.codecs import Result, encode_result
from service.contract.keys import RESULTS_MAXLEN, results_key
from service.contract.tokens import VOLUMES_READ

if TYPE_CHECKING:
    from tests.service.conftest import Api


def publish(rdb: redis.Redis, sid: str, seq: int, shape: tuple[int, int, int] = (16, 32, 32),
            dtype: str = "float16", kind: str = "volume") -> np.ndarray:
    """XADD one result exactly as the worker will (encode_result)."""
    vol = np.random.default_rng(seq).standard_normal(shape).astype(np.float32)
    result = Result.from_volume(
        vol, dtype=dtype, seq=seq, timestamp=seq * 0.025, kind=kind, method="d2ip",
        iterations=50, loss=0.125, latency_ms=40.0 + seq, lag_frames=1, worker="w1", epoch=1)
    rdb.xadd(results_key(sid), encode_result(result),
             maxlen=RESULTS_MAXLEN, approximate=True)
    return vol.astype(dtype)


def viewer(api: Api, sid: str, **kw: Any) -> ClientConnection:
    return connect(f"{api.ws_base}/v1/sessions/{sid}/stream", proxy=None,
                   subprotocols=["bearer", api.token(VOLUMES_READ)], **kw)


def receive_pair(ws: ClientConnection, timeout: float = 5) -> tuple[dict[str, Any], bytes]:
    meta = ws.recv(timeout=timeout)
    binary = ws.recv(timeout=timeout)
    assert isinstance(meta, str) and isinstance(binary, bytes)
    return json.loads(meta), binary


def test_viewer_gets_json_then_binary_per_volume(api: Api, rdb: redis.Redis) -> None:
    sid = api.create_session()["id"]
    with viewer(api, sid) as ws:
        time.sleep(0.2)  # the reader is waiting on XREAD
        sent = publish(rdb, sid, 7, dtype="float32")
        meta, binary = receive_pair(ws)
        sent16 = publish(rdb, sid, 8, kind="preview")
        meta16, binary16 = receive_pair(ws)
    assert meta == {"type": "volume", "session": sid, "seq": 7, "timestamp": 7 * 0.025,
                    "kind": "volume", "method": "d2ip", "iterations": 50, "loss": 0.125,
                    "latency_ms": 47.0, "lag_frames": 1, "shape": [16, 32, 32],
                    "dtype": "float32", "axes": "PRC", "bytes": 16 * 32 * 32 * 4}
    header, vol = wire.unpack_volume(binary)
    assert header == wire.VolumeHeader("float32", (16, 32, 32), 7)
    assert binary[:4] == b"EITV" and len(binary) == 32 + meta["bytes"]
    np.testing.assert_array_equal(vol, sent)
    assert meta16["kind"] == "preview" and meta16["dtype"] == "float16"
    header16, vol16 = wire.unpack_volume(binary16)
    assert header16.seq == 8 and vol16.dtype == np.float16
    np.testing.assert_array_equal(vol16, sent16)


def test_late_joiners_get_the_latest_at_once(api: Api, rdb: redis.Redis) -> None:
    sid = api.create_session()["id"]
    for seq in range(3):
        publish(rdb, sid, seq)
    with viewer(api, sid) as first:  # no reader running yet: it starts from the newest entry
        assert receive_pair(first, timeout=2)[0]["seq"] == 2
        publish(rdb, sid, 3)
        assert receive_pair(first)[0]["seq"] == 3
        with viewer(api, sid) as second:  # joins the running reader: gets its latest
            assert receive_pair(second, timeout=2)[0]["seq"] == 3
            publish(rdb, sid, 4)
            assert receive_pair(first)[0]["seq"] == 4
            assert receive_pair(second)[0]["seq"] == 4


def test_a_slow_viewer_does_not_block_a_fast_one(api: Api, rdb: redis.Redis) -> None:
    sid = api.create_session()["id"]
    shape = (32, 64, 64)  # 512 KiB per float32 volume: socket buffers fill after a few
    n = 60  # 30 MiB in all, more than loopback socket buffers hold
    # max_queue=1: the client stops reading its socket after one frame, so the server's send
    # to it blocks once the socket buffers are full.
    with viewer(api, sid, max_queue=1, max_size=None) as slow, \
            viewer(api, sid, max_size=None) as fast:
        time.sleep(0.3)
        fast_seqs: list[int] = []

        def read_fast() -> None:
            while not fast_seqs or fast_seqs[-1] < n - 1:
                fast_seqs.append(receive_pair(fast, timeout=10)[0]["seq"])

        reader = threading.Thread(target=read_fast)
        reader.start()
        start = time.monotonic()
        for seq in range(n):
            publish(rdb, sid, seq, shape=shape, dtype="float32")
            time.sleep(0.02)
        reader.join(timeout=20)
        fast_elapsed = time.monotonic() - start
        assert fast_seqs and fast_seqs[-1] == n - 1
        assert fast_elapsed < 10
        assert fast_seqs == sorted(fast_seqs)

        slow_seqs: list[int] = []
        while not slow_seqs or slow_seqs[-1] < n - 1:
            slow_seqs.append(receive_pair(slow, timeout=10)[0]["seq"])
    assert slow_seqs[-1] == n - 1  # ends on the newest volume...
    assert len(slow_seqs) < n  # ...having lost older ones instead of stalling anyone
    assert len(fast_seqs) > len(slow_seqs)
    assert slow_seqs == sorted(slow_seqs)


def test_early_disconnects_log_one_rate_limited_line_each_not_a_traceback(
        api: Api, caplog: pytest.LogCaptureFixture) -> None:
    sid = api.create_session()["id"]
    loggers = [logging.getLogger(name) for name in ("uvicorn", "eitmon")]  # both don't propagate
    for logger in loggers:
        logger.addHandler(caplog.handler)

    def handled() -> float:  # refusals counted, plus tracebacks (the old way of handling them)
        counted = REGISTRY.get_sample_value("eitmon_ws_refused_total",
                                            {"reason": "disconnected_before_auth"}) or 0
        return counted + sum(1 for r in caplog.records if r.exc_info)

    n, before = 30, handled()
    start = time.monotonic()
    try:
        for _ in range(n):  # connect without a token and leave before sending one
            with connect(f"{api.ws_base}/v1/sessions/{sid}/stream", proxy=None):
                pass
        while handled() < before + n:  # wait on the server's progress
            time.sleep(0.05)
    finally:
        for logger in loggers:
            logger.removeHandler(caplog.handler)
    elapsed = time.monotonic() - start
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    lines = [r for r in caplog.records if r.name.startswith("eitmon")]
    assert all("\n" not in r.getMessage() for r in lines)
    assert len(lines) <= 1 + elapsed / 10  # one line per event kind per 10 s


def test_a_slow_viewer_never_loses_the_quality_message() -> None:
    """Volumes drop oldest-first in a full queue; the quality status waits in its own slot and
    comes first (the newest one, when several came)."""
    import asyncio

    from service.hub import LatestQueue, QualityMessage, VolumeMessage

    async def run() -> list[str]:
        q = LatestQueue(2)
        q.put(QualityMessage("quality-1", ((4,), 0.75)))
        for k in range(5):
            q.put(VolumeMessage(f"volume-{k}", b""))
        q.put(QualityMessage("quality-2", ((4, 11), 0.54)))
        return [(await q.get()).meta for _ in range(3)]

    assert asyncio.run(run()) == ["quality-2", "volume-3", "volume-4"]
