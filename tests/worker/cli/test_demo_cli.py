"""`eitmon demo` as a user runs it: it starts, serves the viewer, streams volumes, and stops
cleanly on Ctrl-C (SIGINT)."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
from websockets.sync.client import connect

from worker.runtime.local import free_port


@pytest.mark.slow  # a small model and a short simulation: about a minute on 2 cores
def test_demo_starts_serves_streams_and_stops_on_ctrl_c(model_cache_dir: str) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}  # its embedded valkey
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker.cli.main", "demo", "--port", str(port), "--grid", "4",
         "8", "8", "--mesh-size", "0.025", "--duration", "12"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    try:
        printed = dict(lines.get(timeout=240).split(": ", 1) for _ in range(3))
        base = f"http://127.0.0.1:{port}"
        assert printed["viewer"].strip() == f"{base}/viewer"
        with httpx.Client(base_url=base, trust_env=False) as c:
            assert c.get("/healthz").json() == {"status": "ok"}
            page = c.get("/viewer")
            assert page.status_code == 200 and "eitmon viewer" in page.text
            assert c.get("/viewer/js/main.js").status_code == 200
        sid, token = printed["session"].strip(), printed["token"].strip()
        with connect(f"ws://127.0.0.1:{port}/v1/sessions/{sid}/stream", proxy=None,
                     subprotocols=["bearer", token]) as ws:
            # D2IP's default `breath` policy: the preview every frame, D2IP's tidal image and
            # the parameters once per breath (after the warm start, minutes on a busy CPU).
            deadline = time.monotonic() + 900
            kinds = set()
            while not {"tidal", "parameters"} <= kinds and time.monotonic() < deadline:
                message = json.loads(ws.recv(timeout=600))
                kinds.add(message.get("kind", message["type"]))
                if message["type"] == "volume":
                    assert isinstance(ws.recv(timeout=10), bytes)
        assert {"preview", "tidal", "parameters"} <= kinds
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    with pytest.raises(httpx.HTTPError):  # the API went with it
        httpx.get(f"http://127.0.0.1:{port}/healthz", trust_env=False, timeout=2)
