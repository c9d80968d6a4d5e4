// eitmon viewer: wiring of the page (token, session, stream) to the modules that decode
// (wire.js), judge the state (state.js), draw images (images.js) and curves (charts.js), and
// keep the per-breath parameters (parameters.js). docs/viewer.md describes the screen.
import { Pairing } from "./wire.js";
import { describe, refusal, warmup } from "./state.js";
import { ColourScale, Slices, drawColourBar, lungCuts } from "./images.js";
import { Curves, Trend, regionalSums } from "./charts.js";
import { Breaths, minuteRows } from "./parameters.js";
import { Render3D } from "./render3d.js";

const TOKEN_KEY = "eitmon.token", SESSION_KEY = "eitmon.session";
const RETRY_MS = 2000, POLL_MS = 3000;
/** What each reconstruction method is (docs/service-api.md, Sessions). */
const METHODS = {
  tikhonov: "Tikhonov, linear and fast", greit: "3D GREIT, linear and fast",
  tv: "total variation", d2ip: "D2IP, deep dynamic image prior",
  "d2ip-scaled": "D2IP, deep dynamic image prior, scaled λ", dip: "deep image prior",
  rsip: "R-SIP, shallow-network image prior",
};
const named = (method) => `${method} (${METHODS[method] ?? "reconstruction"})`;
const $ = (id) => document.getElementById(id);

/** Everything the screen shows of the current session. */
export const model = {
  sid: "", session: null, ws: null, connection: "none", refused: null, failure: null,
  connectedAt: 0, lastImageAt: null, offset: null, dynamic: null, tidal: null, cut: null,
  userCut: false, dirty: false,
};
const scale = new ColourScale(), breaths = new Breaths();
const dynSlices = new Slices("dyn"), tidalSlices = new Slices("tidal");
const curves = new Curves(), trend = new Trend(), render3d = new Render3D($("tidal-3d"));
let pairing = new Pairing(), pollTimer = null;

const token = () => sessionStorage.getItem(TOKEN_KEY);
const headers = () => ({ Authorization: `Bearer ${token()}` });
const ago = (ms) => `${Math.max(0, ms / 1000).toFixed(0)} s ago`;

// --- messages ---------------------------------------------------------------------------------

/** One WebSocket message (text or binary), as the stream delivers it. */
export function receive(data) {
  const msg = pairing.accept(data);
  if (!msg) return;
  if (msg.type === "volume") onVolume(msg.meta, msg.volume);
  else if (msg.type === "parameters") onBreath(msg.id, msg.breath);
  else if (msg.type === "status" && msg.status === "failed") {
    model.failure = msg.reason ?? msg.status;  // an `open` status carries only `quality`
    showState();
  }
  if (msg.quality) showQuality(msg.quality);
}

function onVolume(meta, volume) {
  const takenAt = Date.now() - meta.latency_ms;  // wall time the image was published for
  if (meta.kind === "preview") {
    if (model.offset == null || (model.dynamic && meta.timestamp < model.dynamic.meta.timestamp)) {
      model.offset = takenAt / 1000 - meta.timestamp;
    }
    model.dynamic = { meta, volume };
    model.lastImageAt = takenAt;
    const learning = !scale.frozen;  // the cuts follow the ventilation until the scale is fixed
    scale.observe(volume, meta.timestamp);
    if (learning && !model.userCut) model.cut = lungCuts(scale.activity, volume.shape);
    curves.push(meta.timestamp + model.offset, regionalSums(volume));
  } else {
    model.tidal = { meta, volume, takenAt };
  }
  model.dirty = true;
}

function onBreath(id, breath) {
  breaths.add([{ id, breath }]);
  scale.breath();
  if (model.offset != null) curves.breath(breath.start_s + model.offset, breath.end_inspiration_s + model.offset);
  showParameters();
}

function showQuality(q) {
  const bad = q.bad_electrodes ?? [];
  const warnings = q.warnings ?? [];
  const lines = warnings.map((w) => `Warning: ${w}.`);
  if (bad.length) {
    lines.unshift(`Electrode contact: ${bad.length} bad (${bad.join(", ")}); ` +
      `${(100 * (q.usable_fraction ?? 0)).toFixed(0)} % of the measurements usable.`);
  }
  $("quality").hidden = !lines.length;
  $("quality").textContent = lines.join(" ");
}

// --- drawing ----------------------------------------------------------------------------------

/** Draw what changed: slices, colour bar, curves. Called once per animation frame. */
export function render() {
  if (!model.dirty) return;
  model.dirty = false;
  const geometry = model.session?.settings?.geometry;
  const any = model.dynamic ?? model.tidal;
  if (any && !model.cut) model.cut = any.volume.shape.map((n) => n >> 1);
  if (model.dynamic) dynSlices.draw(model.dynamic.volume, model.cut, scale.limit, geometry);
  if (model.tidal) tidalSlices.draw(model.tidal.volume, model.cut, scale.limit, geometry);
  if (model.tidal && $("show-3d").checked) {
    render3d.show(model.tidal.volume, model.tidal.meta.seq, scale.limit, geometry)
      .catch((e) => { $("render-note").textContent = `3D render unavailable: ${e.message}`; });
  }
  drawColourBar($("colourbar"), scale.limit);
  $("scale-state").textContent = scale.frozen ? `fixed at ±${scale.limit.toPrecision(2)} %`
    : "setting from the first breaths";
  curves.draw();
  const shape = any?.volume.shape;
  ["p", "r", "c"].forEach((k, i) => {
    if (shape) $(k).max = shape[i] - 1;
    $(k).value = model.cut?.[i] ?? 0; $(`${k}-out`).value = model.cut?.[i] ?? "";
  });
}

function loop() { render(); requestAnimationFrame(loop); }

function showState() {
  const now = Date.now(), s = describe(model, now);
  $("state").dataset.level = s.level;
  $("state").textContent = s.text;
  $("dynamic").classList.toggle("old", s.level !== "live");
  const d = model.dynamic?.meta;
  $("dyn-what").textContent = d ? `· ${named(d.method)}` : "";
  const t = model.tidal;
  if (t) {
    const tm = t.meta, what = tm.kind === "tidal" ? "breath" : "latest volume";
    $("tidal-what").textContent = `· ${what}: ${named(tm.method)} · ${ago(now - t.takenAt)}`;
    $("tidal").classList.toggle("old", s.level !== "live" || now - t.takenAt > 30_000);
  } else {
    const info = model.session;
    $("tidal-what").textContent = info
      ? `· ${named(info.settings.method)}: ${warmup(info) ?? "waiting for the first breath"}` : "";
  }
  $("status").textContent = d ? `frame ${d.seq} · image ${ago(now - model.lastImageAt)} ` +
    `(belt → image ${d.latency_ms.toFixed(0)} ms)` + (t?.meta.lag_frames
      ? ` · ${t.meta.method} ${t.meta.lag_frames} frames behind the belt` : "") : "";
}

function showParameters() {
  const m = breaths.minute();
  $("minute-what").textContent = m ? `· last ${m.breaths} breaths, regional from ${m.method}` : "· no breath yet";
  $("values").replaceChildren(...minuteRows(m).map(([label, value, unit]) => {
    const div = document.createElement("div"), dt = document.createElement("dt");
    const dd = document.createElement("dd");
    dt.textContent = label; dd.textContent = `${value} ${unit}`;
    div.append(dt, dd);
    return div;
  }));
  trend.show(breaths.points(), +$("trend-window").value, Date.now() / 1000);
}

function showIdentity(s) {
  const start = new Date(s.created_at * 1000);
  $("identity").textContent = `${s.patient_label ?? "Unlabelled patient"} · bed ${s.bed ?? "–"}` +
    ` · since ${start.toLocaleString([], { dateStyle: "short", timeStyle: "short" })}`;
}

// --- session and stream -----------------------------------------------------------------------

async function pollSession() {
  if (!model.sid) return;
  const r = await fetch(`/v1/sessions/${model.sid}`, { headers: headers(), cache: "no-store" }).catch(() => null);
  if (r?.ok) { model.session = await r.json(); showIdentity(model.session); model.dirty = true; }
  showState();
}

/** Watch session `sid`: its details, its breaths so far, then its stream. */
export async function connect(sid) {
  if (model.ws) { const ws = model.ws; model.ws = null; ws.close(); }
  clearInterval(pollTimer);
  Object.assign(model, { sid, session: null, connection: sid ? "connecting" : "none", failure: null,
                         lastImageAt: null, offset: null, dynamic: null, tidal: null, cut: null,
                         userCut: false, dirty: true });
  scale.reset(); breaths.reset(); curves.reset(); pairing = new Pairing();
  sessionStorage.setItem(SESSION_KEY, sid);
  if (!sid || !token()) { showState(); return; }
  await pollSession();
  pollTimer = setInterval(pollSession, POLL_MS);
  await breaths.load(sid, headers()).catch(() => {});
  showParameters();
  open(sid);
}

function open(sid) {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${proto}//${location.host}/v1/sessions/${sid}/stream`, ["bearer", token()]);
  ws.binaryType = "arraybuffer";
  ws.onopen = () => { model.connection = "open"; model.connectedAt = Date.now(); showState(); };
  ws.onmessage = (ev) => receive(ev.data);
  ws.onclose = (ev) => {
    if (model.ws !== ws) return;
    model.connection = "closed"; pairing = new Pairing();
    if (ev.code === 1008) model.refused = refusal(ev.reason);
    else if (ev.code === 4404) model.refused = "This session does not exist (any more).";
    else if (ev.reason !== "session_failed") setTimeout(() => { if (model.ws === ws) open(sid); }, RETRY_MS);
    showState();
  };
  model.ws = ws;
}

async function listSessions() {
  const select = $("session");
  if (!token()) { showState(); return; }
  const r = await fetch("/v1/sessions?status=open", { headers: headers(), cache: "no-store" });
  if (!r.ok) {
    const body = await r.json().catch(() => ({}));
    model.refused = refusal(body.error?.reason ?? `HTTP ${r.status}`);
    showState();
    return;
  }
  model.refused = null;
  const { sessions } = await r.json(), wanted = select.value || sessionStorage.getItem(SESSION_KEY);
  select.replaceChildren(new Option("(choose a session)", ""), ...sessions.map((s) =>
    new Option(`${s.patient_label ?? "unlabelled"} · bed ${s.bed ?? "–"} · ` +
               `${new Date(s.created_at * 1000).toLocaleTimeString()} · ${s.settings.method}`, s.id)));
  select.value = sessions.some((s) => s.id === wanted) ? wanted : (sessions.length === 1 ? sessions[0].id : "");
  if (select.value !== model.sid) await connect(select.value);
  showState();
}

// --- controls ---------------------------------------------------------------------------------

$("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
  $("token").value = "";
  model.refused = null;
  listSessions();
});
$("forget").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  connect("");
  $("session").replaceChildren(new Option("(enter a token)", ""));
});
$("refresh").addEventListener("click", listSessions);
$("session").addEventListener("change", (ev) => connect(ev.target.value));
$("gain").addEventListener("input", (ev) => { scale.gain = +ev.target.value; model.dirty = true; });
$("trend-window").addEventListener("change", showParameters);
$("show-3d").addEventListener("change", (ev) => {
  $("tidal-3d").hidden = !ev.target.checked; model.dirty = true;
});
["p", "r", "c"].forEach((k, i) => $(k).addEventListener("input", (ev) => {
  if (!model.cut) return;
  model.cut[i] = +ev.target.value; model.userCut = true; model.dirty = true;
}));
setInterval(showState, 500);
requestAnimationFrame(loop);
showState();
listSessions();

// what the page holds, for the browser tests (tests/service/viewer) and the console
export { breaths, curves, scale };
