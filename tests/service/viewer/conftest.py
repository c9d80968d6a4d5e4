"""The whole monitor for the viewer's browser tests: the API (`eitmon api`) and a worker
(`eitmon worker`, the tikhonov preview and main method) as processes on the test valkey, a
simulated belt streaming a breathing patient at 20 frames/s, and headless Debian Chromium driven
by Selenium (chromium-driver). Screenshots go to $EITMON_TEST_ARTIFACTS (default
tests/artifacts/, ignored by git)."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis

from service.contract.tokens import FRAMES_WRITE, SCOPES, create_token
from worker.forward import load_model
from worker.forward.model import ForwardModel
from worker.runtime.local import Child, start_api, start_worker

SECRET = "viewer-test-secret-0123456789abcdef0123"
SPEC = {"geometry": {"preset": "thorax-2x16", "mesh_size": 0.025}, "protocol": "skip4",
        "grid": [8, 16, 16]}  # two rings, M = 928, 1728 voxels: built once per cache
RATE = 20.0  # frames/s
BREATH_S = 3.0  # one breath every 3 s (20/min)
STALL_S = 90.0  # a wait fails after this long without progress (a loaded 2-core machine)
ARTIFACTS = Path(os.environ.get("EITMON_TEST_ARTIFACTS",
                                Path(__file__).resolve().parents[2] / "artifacts"))


def chromium_paths() -> tuple[str, str] | None:
    """Debian's chromium and chromium-driver, if installed."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def lung_frames(model: ForwardModel, n: int, t0: int = 0) -> np.ndarray:
    """n belt frames (n, M) from frame index t0: two lungs (right a little larger) whose air
    lowers conductivity by up to 15 %, breathing every BREATH_S, through the linearised model."""
    P, R, C = model.grid.shape
    p, r, c = np.meshgrid(np.arange(P), np.arange(R), np.arange(C), indexing="ij")
    right = ((c - 0.28 * C) / (0.18 * C)) ** 2 + ((r - 0.55 * R) / (0.3 * R)) ** 2 < 1
    left = ((c - 0.72 * C) / (0.16 * C)) ** 2 + ((r - 0.55 * R) / (0.28 * R)) ** 2 < 1
    lungs = (right | left) & (p >= 1) & (p <= P - 2)
    x = -0.15 * lungs[model.mask]
    phase = 2 * np.pi * (t0 + np.arange(n)) / (RATE * BREATH_S)
    depth = 0.5 * (1 - np.cos(phase))
    v0 = model.reference_voltages
    return (v0 + np.abs(v0) * depth[:, None] * (model.jacobian @ x)).astype("<f4")


@dataclass
class Belt:
    """Posts binary frames in real time (batches of 4) until stopped; `paused` holds it."""

    base: str
    sid: str
    model: ForwardModel
    paused: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)
    sent: int = 0

    def run(self) -> None:
        token = create_token(SECRET, [FRAMES_WRITE], 3600, subject="belt", sessions=[self.sid])
        batch, start = 4, time.monotonic()
        with httpx.Client(base_url=self.base, trust_env=False, timeout=10,
                          headers={"Authorization": f"Bearer {token}"}) as client:
            while not self.stop.is_set():
                if self.paused.is_set():
                    time.sleep(0.05)
                    start = time.monotonic() - self.sent / RATE
                    continue
                frames = lung_frames(self.model, batch, self.sent)
                try:
                    client.post(f"/v1/sessions/{self.sid}/frames", content=frames.tobytes(),
                                headers={"Content-Type": "application/octet-stream",
                                         "X-Frame-Count": str(batch),
                                         "X-Seq-Start": str(self.sent),
                                         "X-Timestamp-Start": str(self.sent / RATE),
                                         "X-Frame-Interval": str(1 / RATE)})
                except httpx.HTTPError:  # the API is being restarted by a test
                    time.sleep(0.2)
                    continue
                self.sent += batch
                time.sleep(max(0.0, start + self.sent / RATE - time.monotonic()))


@dataclass
class Monitor:
    """The running product, one session and its belt."""

    base: str
    sid: str
    redis: redis.Redis
    belt: Belt
    api: Child
    restart_api: Callable[[], Child]

    def token(self, *scopes: str) -> str:
        return create_token(SECRET, list(scopes or SCOPES), 3600, subject="viewer-test",
                            sessions=[self.sid])


@pytest.fixture(scope="module")
def monitor(redis_server_url: str, model_cache_dir: str, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Monitor]:
    if chromium_paths() is None:
        pytest.skip("chromium and chromium-driver are not installed (tests/run.sh installs them)")
    redis.Redis.from_url(redis_server_url).flushdb()
    model = load_model(**SPEC)  # built before the worker starts, so it reads it from the cache
    api = start_api(redis_server_url, SECRET, quiet=True)
    port = int(api.url.rsplit(":", 1)[1])
    worker = start_worker(redis_server_url, {
        "EITMON_WORKER_NAME": "viewer-test", "EITMON_DEVICE": "cpu", "EITMON_FUSED": "0",
        "EITMON_CHECKPOINT_DIR": str(tmp_path_factory.mktemp("ckpt"))}, quiet=True)
    admin = create_token(SECRET, SCOPES, 3600, subject="admin")
    with httpx.Client(base_url=api.url, trust_env=False, timeout=10,
                      headers={"Authorization": f"Bearer {admin}"}) as client:
        r = client.post("/v1/sessions", json={
            **SPEC, "method": "tikhonov", "realtime": "breath", "patient_label": "P-0042",
            "bed": "ICU-3 7",
            "reference": {"mode": "explicit", "voltages": model.reference_voltages.tolist()}})
        assert r.status_code == 201, r.text
    sid = r.json()["id"]
    belt = Belt(api.url, sid, model)
    belt.paused.set()  # the page first sees the session warming up
    thread = threading.Thread(target=belt.run, daemon=True)
    thread.start()
    children = {"api": api}

    def restart_api() -> Child:
        children["api"] = start_api(redis_server_url, SECRET, port=port, quiet=True)
        return children["api"]

    rdb = redis.Redis.from_url(redis_server_url)
    try:
        yield Monitor(api.url, sid, rdb, belt, api, restart_api)
    finally:
        belt.stop.set()
        thread.join(10)
        worker.stop()
        children["api"].stop()
        rdb.close()


@dataclass
class Page:
    """A Chromium tab on the viewer, with helpers that wait on what the page shows."""

    driver: Any
    base: str

    def js(self, script: str, *args: Any) -> Any:
        """Run `script` with the viewer's main module as `m` (the page's own instance)."""
        return self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "import('/viewer/js/main.js').then(async (m) => done(await (async (m, args) => {"
            f"{script}" "})(m, [...arguments].slice(0, -1))))"
            ".catch((e) => done({error: String(e)}));", *args)

    def state(self) -> tuple[str, str]:
        el = self.driver.find_element("id", "state")
        return el.get_attribute("data-level"), el.text

    def wait(self, check: Callable[[], Any], what: str, stall: float = STALL_S) -> Any:
        """Poll `check()` until truthy; fail after `stall` s (the page's frame count and state
        moving count as progress)."""
        start = time.monotonic()
        while True:
            got = check()
            if got:
                return got
            if time.monotonic() - start > stall:
                raise AssertionError(f"waited {stall:.0f} s for {what}; state {self.state()}")
            time.sleep(0.2)

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"viewer-{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def login(self, token: str) -> None:
        self.driver.find_element("id", "token").send_keys(token)
        self.driver.find_element("css selector", "#login button[type=submit]").click()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium with its performance log (every network request) switched on."""
    paths = chromium_paths()
    if paths is None:
        pytest.skip("chromium and chromium-driver are not installed (tests/run.sh installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1400,1750", "--no-first-run",
                "--use-angle=swiftshader", "--enable-unsafe-swiftshader",  # WebGL2 on the CPU
                "--disable-background-networking", "--disable-component-update",
                "--disable-default-apps", "--disable-sync"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(paths[1]), options=options)
    driver.set_script_timeout(120)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def page(browser: Any, monitor: Monitor) -> Page:
    browser.get(f"{monitor.base}/viewer")
    return Page(browser, monitor.base)
