"""The viewer in headless Chromium against the real API, worker and valkey, fed by a simulated
belt (conftest.py). The tests run in order on one page: warming up, live, fixed scale, breaths,
stale, reload, a fresh load's requests, disconnected, failed; then a wrong token. Every wait follows
what the page shows; none is a bare sleep."""

from __future__ import annotations

import io
import json
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from PIL import Image

from service.contract.fields import SessionField, SessionStatus
from service.contract.keys import session_key
from service.contract.tokens import VOLUMES_READ
from tests.service.viewer.conftest import ARTIFACTS, Monitor, Page

# JavaScript run in the page, with the viewer's main module as `m`
DYNAMIC_SEQ = "return m.model.dynamic?.meta.seq ?? -1;"
LIT_PIXELS = """
const c = document.getElementById(args[0]), d = c.getContext('2d')
  .getImageData(0, 0, c.width, c.height).data;
let lit = 0;
for (let i = 0; i < d.length; i += 4) if (d[i] + d[i + 1] + d[i + 2] > 150) lit++;
return lit;"""


def next_frames(page: Page, n: int) -> int:
    """Wait until the page has drawn n more dynamic images; the last seq."""
    seq0 = page.js(DYNAMIC_SEQ)
    return page.wait(lambda: (s := page.js(DYNAMIC_SEQ)) >= seq0 + n and s, f"{n} more frames")


def test_warming_up_then_live_with_images_curves_and_parameters(page: Page,
                                                                monitor: Monitor) -> None:
    page.login(monitor.token(VOLUMES_READ))
    level, text = page.wait(lambda: (s := page.state())[0] == "warming" and s, "warming up")
    assert text.startswith("Warming up")
    identity = page.driver.find_element("id", "identity").text
    assert identity.startswith("P-0042 · bed ICU-3 7 · since ") and monitor.sid not in identity
    page.screenshot("warming-up")
    monitor.belt.paused.clear()
    page.wait(lambda: page.state()[0] == "live", "live")
    for view in ("dyn-axial", "dyn-coronal", "dyn-sagittal"):  # the lungs light up
        page.wait(lambda v=view: page.js(LIT_PIXELS, v) > 5, f"a ventilated {view}")
    page.wait(lambda: page.js("return m.curves.x.length;") > 40, "the global curve")
    page.wait(lambda: page.js("return m.model.tidal?.meta.kind;") == "tidal", "a tidal image")
    page.wait(lambda: page.js(LIT_PIXELS, "tidal-coronal") > 5, "a ventilated tidal image")
    rate = page.wait(lambda: (t := page.driver.find_element("css selector", "#values dd").text)
                     != "– /min" and t, "the minute values")
    assert abs(float(rate.split()[0]) - 20.0) < 3  # the belt breathes 20/min


def test_colour_scale_stays_fixed_and_cuts_go_through_the_lungs(page: Page) -> None:
    page.wait(lambda: page.js("return m.scale.frozen;"), "the scale to be set")
    before = page.js("return [m.scale.limit, document.getElementById('colourbar').toDataURL()];")
    shown = []
    for _ in range(3):  # across different phases of the breath
        next_frames(page, 10)
        shown.append(page.js("return [m.scale.limit, "
                             "document.getElementById('colourbar').toDataURL()];"))
    assert all(s == before for s in shown)
    assert 2 < before[0] < 40  # percent: the lungs' 15 % (as reconstructed), not the noise's
    # end-inspiration and end-expiration differ in brightness: no per-frame normalisation
    lit = []
    for _ in range(8):
        next_frames(page, 6)
        lit.append(page.js(LIT_PIXELS, "dyn-coronal"))
    assert max(lit) > 2 * min(lit) + 5
    p, r, c = page.js("return m.model.cut;")
    shape = page.js("return m.model.dynamic.volume.shape;")
    assert c < shape[2] // 2  # the sagittal view cuts the right lung, not the mediastinum
    assert 1 <= p <= shape[0] - 2


def test_breaths_are_marked_on_the_global_curve(page: Page) -> None:
    marks = page.wait(lambda: (b := page.js("return m.curves.breaths;")) and len(b) >= 2 and b,
                      "two breaths on the curve")
    xs = page.js("return m.curves.x;")
    assert any(xs[0] <= b["start"] <= xs[-1] for b in marks)
    assert all(b["start"] < b["peak"] for b in marks)
    yellow = page.js("""const c = document.querySelector('#global-chart canvas'),
      d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      let n = 0; for (let i = 0; i < d.length; i += 4)
        if (d[i] > 200 && d[i + 1] > 170 && d[i + 2] < 80) n++;
      return n;""")
    assert yellow > 20  # the markers are drawn
    inspiring = ("const g = m.curves.y.global.filter((v) => v != null);"
                 "return g.at(-1) > 0.7 * Math.max(...g);")
    for _ in range(20):  # a screenshot near end-inspiration, for the docs
        page.wait(lambda: page.js(inspiring), "an inspiration")
        page.screenshot("live")
        if page.js(inspiring):
            break


RECORD = """
const [pairs] = args;
const ws = new WebSocket(`ws://${location.host}/v1/sessions/${m.model.sid}/stream`,
                         ['bearer', sessionStorage.getItem('eitmon.token')]);
ws.binaryType = 'arraybuffer';
const recorded = [];  // (metadata, volume) pairs of the preview, as the server sent them
await new Promise((resolve) => {
  let meta = null;
  ws.onmessage = (ev) => {
    if (typeof ev.data === 'string') { meta = JSON.parse(ev.data); return; }
    if (meta?.kind === 'preview') recorded.push([meta, ev.data]);
    meta = null;
    if (recorded.length >= pairs) resolve();
  };
});
ws.close();
globalThis.recorded = recorded;
return recorded.length;
"""
REPLAY = """
const [rate, seconds, f] = args;
function upsample([meta, buf]) {  // each voxel f x f x f times: the same content, a larger grid
  const v = new DataView(buf), [P, R, C] = [8, 12, 16].map((o) => v.getUint32(o, true));
  if (v.getUint8(5) !== 1) throw new Error('expected float16');
  const src = new Uint16Array(buf, 32, P * R * C), [P2, R2, C2] = [P * f, R * f, C * f];
  const out = new ArrayBuffer(32 + 2 * P2 * R2 * C2), ov = new DataView(out);
  new Uint8Array(out, 0, 32).set(new Uint8Array(buf, 0, 32));
  [P2, R2, C2].forEach((n, i) => ov.setUint32(8 + 4 * i, n, true));
  const dst = new Uint16Array(out, 32);
  for (let p = 0, k = 0; p < P2; p++) for (let r = 0; r < R2; r++) for (let c = 0; c < C2; c++, k++)
    dst[k] = src[(((p / f) | 0) * R + ((r / f) | 0)) * C + ((c / f) | 0)];
  return [{...meta, shape: [P2, R2, C2], bytes: 2 * P2 * R2 * C2}, out];
}
const frames = globalThis.recorded.map(upsample);
const n = Math.round(rate * seconds), costs = [];
const seq0 = frames.at(-1)[0].seq + 1, ts0 = frames.at(-1)[0].timestamp + 1;
const start = performance.now();
await new Promise((resolve) => {  // frame k is due at start + k / rate; a late page catches up
  let k = 0;
  const tick = () => {
    while (k < n && performance.now() >= start + (1000 * k) / rate) {
      const [meta, buffer] = frames[k % frames.length];
      const text = JSON.stringify({...meta, seq: seq0 + k, timestamp: ts0 + k / rate});
      const t = performance.now();
      m.receive(text); m.receive(buffer.slice(0)); m.render();  // decode and draw, as live
      costs.push(performance.now() - t);
      k++;
    }
    if (k === n) resolve();
    else setTimeout(tick, Math.max(0, start + (1000 * k) / rate - performance.now()));
  };
  tick();
});
const wall = (performance.now() - start) / 1000;
costs.sort((a, b) => a - b);
return {frames: n, fed_per_s: rate, achieved_per_s: n / wall, shape: m.model.dynamic.volume.shape,
        mean_ms: costs.reduce((a, b) => a + b, 0) / n, median_ms: costs[Math.floor(n / 2)],
        p95_ms: costs[Math.floor(0.95 * n)],
        max_ms: costs[n - 1], last_seq: m.model.dynamic.meta.seq, expected_last_seq: seq0 + n - 1};
"""


def test_the_tidal_image_renders_in_3d_with_niivue(page: Page) -> None:
    """WebGL2 in headless Chromium (SwiftShader): the render shows the ventilated lungs in
    blue on the dark background."""
    page.driver.find_element("id", "show-3d").click()
    canvas = page.driver.find_element("id", "tidal-3d")

    def blue_pixels() -> int:
        note = page.driver.find_element("id", "render-note").text
        assert not note, note
        shot = Image.open(io.BytesIO(page.driver.get_screenshot_as_png())).convert("RGB")
        box = canvas.rect  # the page is at device pixel ratio 1
        rgb = np.asarray(shot.crop((box["x"], box["y"], box["x"] + box["width"],
                                    box["y"] + box["height"])), int)
        return int(((rgb[..., 2] > 90) & (rgb[..., 2] > rgb[..., 0] + 50)).sum())

    page.wait(lambda: blue_pixels() > 200, "a 3D render of the lungs")
    page.screenshot("3d")
    page.driver.find_element("id", "show-3d").click()


def test_decoding_and_drawing_keep_up_with_50_frames_per_second(page: Page,
                                                                monitor: Monitor) -> None:
    """Recorded messages of the live stream, fed in-page at 50/s for 10 s through the page's
    own receive() and render(), at the session's grid and upsampled to the service default;
    the figures go to the artefacts (docs/viewer.md reports them), the test checks that every
    frame was decoded and drawn."""
    monitor.belt.paused.clear()  # also when run alone (-k frames_per_second)
    if page.js("return m.model.sid;") != monitor.sid:
        page.login(monitor.token(VOLUMES_READ))
    page.wait(lambda: page.state()[0] == "live", "live")
    assert page.js(RECORD, 40) == 40
    monitor.belt.paused.set()  # only the fed frames reach the page
    try:  # the session's grid (8 x 16 x 16), and the service default (16 x 32 x 32)
        runs = [page.js(REPLAY, 50, 10, f) for f in (1, 2)]
    finally:
        monitor.belt.paused.clear()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "viewer-frame-rate.json").write_text(json.dumps(runs, indent=1))
    for got in runs:
        assert "error" not in got, got
        print("viewer decode+draw:", json.dumps(got))
        assert got["frames"] == 500 and got["last_seq"] == got["expected_last_seq"]
    assert [got["shape"] for got in runs] == [[8, 16, 16], [16, 32, 32]]
    page.js("await m.connect(m.model.sid); return true;")  # back to the live session


def test_a_stale_stream_is_marked(page: Page, monitor: Monitor) -> None:
    monitor.belt.paused.set()
    try:
        level, text = page.wait(lambda: (s := page.state())[0] == "stale" and s, "stale")
        assert "STALE" in text and "old" in text
        assert "old" in page.driver.find_element("id", "dynamic").get_attribute("class")
        page.screenshot("stale")
    finally:
        monitor.belt.paused.clear()
    page.wait(lambda: page.state()[0] == "live", "live again")


def test_a_reload_keeps_the_trend(page: Page) -> None:
    before = page.wait(lambda: (ids := page.js("return m.breaths.entries.map((e) => e.id);"))
                       and len(ids) >= 3 and ids, "three breaths")
    page.driver.refresh()  # the token and session stay in sessionStorage
    after = page.wait(lambda: (ids := page.js("return m.breaths.entries.map((e) => e.id);"))
                      and len(ids) >= len(before) and ids, "the trend after the reload")
    assert set(before) <= set(after)
    page.wait(lambda: page.state()[0] == "live", "live after the reload")
    points = page.js("return m.breaths.points().length;")
    assert points >= len(before)


def test_the_page_requests_nothing_outside_its_origin(browser: Any, monitor: Monitor) -> None:
    """Every request of a fresh load, from login to a live stream, from the performance log
    (Chromium's network events); and no console error (a CSP violation would be one)."""
    browser.get_log("performance")  # drop what earlier tests logged
    browser.get_log("browser")
    browser.get(f"{monitor.base}/viewer")
    page = Page(browser, monitor.base)
    page.login(monitor.token(VOLUMES_READ))
    page.wait(lambda: page.state()[0] == "live", "live")
    origin = urlsplit(monitor.base)
    urls = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] in ("Network.requestWillBeSent", "Network.webSocketCreated"):
            params = message["params"]
            urls.append(params.get("request", {}).get("url") or params.get("url"))
    assert any(u.endswith("/vendor/uPlot.esm.js") for u in urls)
    assert any(u.startswith("ws://") for u in urls)
    foreign = [u for u in urls if (urlsplit(u).hostname, urlsplit(u).port)
               != (origin.hostname, origin.port)]
    assert foreign == [], foreign
    errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], errors


def test_disconnected_then_failed_are_stated(page: Page, monitor: Monitor) -> None:
    monitor.api.stop()
    try:
        level, text = page.wait(lambda: (s := page.state())[0] == "disconnected" and s,
                                "disconnected")
        assert "Disconnected" in text
        page.screenshot("disconnected")
    finally:
        monitor.api = monitor.restart_api()
    page.wait(lambda: page.state()[0] == "live", "live after the API came back")
    monitor.redis.hset(session_key(monitor.sid), mapping={
        SessionField.STATUS.value: SessionStatus.FAILED.value,
        SessionField.FAILURE_REASON.value: "reconstruction failed 3 times: RuntimeError"})
    level, text = page.wait(lambda: (s := page.state())[0] == "failed" and s, "failed")
    assert text.startswith("Session failed: reconstruction failed 3 times")
    page.screenshot("failed")


def test_a_wrong_token_gives_a_clear_message(browser: Any, monitor: Monitor) -> None:
    browser.get(f"{monitor.base}/viewer")
    browser.execute_script("sessionStorage.clear();")
    browser.refresh()
    page = Page(browser, monitor.base)
    page.login("not-a-token")
    level, text = page.wait(lambda: (s := page.state())[0] == "refused" and s, "a refusal")
    assert text == ("Token refused: the token is not valid for this server. "
                    "Enter a valid viewer token.")
    page.screenshot("wrong-token")
