// eitmon viewer: live slices of the latest volume and the global impedance curve.
// Wire format (docs/service-api.md): per volume a JSON text message, then a binary message
// with a 32-byte little-endian header ("EITV", version, dtype, header length, P, R, C, seq)
// and P*R*C float16/float32 values in C order over (P planes, R rows, C columns).
"use strict";

const TOKEN_KEY = "eitmon.token";
const WINDOW_S = 60;
const $ = (id) => document.getElementById(id);

const state = { ws: null, meta: null, latest: null, shape: null, wave: [], drawn: true };

// --- float16 ------------------------------------------------------------------------------
const HALF = (() => {
  const table = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, m = h & 0x3ff;
    table[h] = e === 0 ? s * m * 2 ** -24
      : e === 31 ? (m ? NaN : s * Infinity) : s * (1 + m / 1024) * 2 ** (e - 15);
  }
  return table;
})();

function decode(buffer) {
  const view = new DataView(buffer);
  const magic = String.fromCharCode(...new Uint8Array(buffer, 0, 4));
  if (magic !== "EITV" || view.getUint8(4) !== 1) throw new Error("not an eitmon volume");
  const dtype = view.getUint8(5), hlen = view.getUint16(6, true);
  const shape = [view.getUint32(8, true), view.getUint32(12, true), view.getUint32(16, true)];
  const n = shape[0] * shape[1] * shape[2];
  let data;
  if (dtype === 2) {
    data = new Float32Array(buffer, hlen, n);
  } else {
    const half = new Uint16Array(buffer, hlen, n);
    data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = HALF[half[i]];
  }
  return { shape, data, seq: Number(view.getBigUint64(24, true)) };
}

// --- drawing -------------------------------------------------------------------------------
function colour(v, scale) {  // blue (negative) - black - red (positive)
  const t = Math.max(-1, Math.min(1, v / scale));
  return t < 0 ? [40, 90 + 120 * -t, 255 * -t] : [255 * t, 90 * t, 40 * t];
}

// value(i, j) of an h x w image, drawn scaled into the canvas
function drawSlice(canvas, h, w, value, scale) {
  const img = new ImageData(w, h);
  for (let i = 0; i < h; i++) {
    for (let j = 0; j < w; j++) {
      const [r, g, b] = colour(value(i, j), scale), k = 4 * (i * w + j);
      img.data[k] = r; img.data[k + 1] = g; img.data[k + 2] = b; img.data[k + 3] = 255;
    }
  }
  const off = document.createElement("canvas");
  off.width = w; off.height = h;
  off.getContext("2d").putImageData(img, 0, 0);
  const ctx = canvas.getContext("2d"), size = 256 / Math.max(h, w);
  canvas.width = Math.round(w * size); canvas.height = Math.round(h * size);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(off, 0, 0, canvas.width, canvas.height);
}

function drawVolume() {
  state.drawn = true;
  const vol = state.latest;
  if (!vol) return;
  const [P, R, C] = vol.shape, d = vol.data;
  if (!state.shape || state.shape.join() !== vol.shape.join()) setupSliders(vol.shape);
  const p = +$("p").value, r = +$("r").value, c = +$("c").value;
  let scale = 1e-6;
  for (let i = 0; i < d.length; i++) scale = Math.max(scale, Math.abs(d[i]));
  const at = (pp, rr, cc) => d[(pp * R + rr) * C + cc];
  drawSlice($("axial"), R, C, (i, j) => at(p, i, j), scale);
  drawSlice($("coronal"), P, C, (i, j) => at(P - 1 - i, r, j), scale);
  drawSlice($("sagittal"), P, R, (i, j) => at(P - 1 - i, j, c), scale);
  $("p-out").value = p; $("r-out").value = r; $("c-out").value = c;
}

function setupSliders(shape) {
  state.shape = shape;
  ["p", "r", "c"].forEach((id, k) => {
    $(id).max = shape[k] - 1;
    $(id).value = Math.floor(shape[k] / 2);
  });
}

function drawWave() {
  const canvas = $("waveform"), ctx = canvas.getContext("2d");
  ctx.fillStyle = "#000"; ctx.fillRect(0, 0, canvas.width, canvas.height);
  const pts = state.wave;
  if (pts.length < 2) return;
  const t1 = pts[pts.length - 1][0], t0 = t1 - WINDOW_S;
  let lo = Infinity, hi = -Infinity;
  for (const [, v] of pts) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  const span = hi - lo || 1;
  ctx.strokeStyle = "#6cf"; ctx.beginPath();
  pts.forEach(([t, v], k) => {
    const x = ((t - t0) / WINDOW_S) * canvas.width;
    const y = canvas.height - 8 - ((v - lo) / span) * (canvas.height - 16);
    if (k) ctx.lineTo(x, y); else ctx.moveTo(x, y);
  });
  ctx.stroke();
  ctx.fillStyle = "#999"; ctx.font = "11px monospace";
  ctx.fillText(`${hi.toPrecision(3)}`, 4, 12);
  ctx.fillText(`${lo.toPrecision(3)}`, 4, canvas.height - 4);
}

// --- data ----------------------------------------------------------------------------------
function kind() { return document.querySelector("input[name=kind]:checked").value; }

function onVolume(meta, buffer) {
  if (meta.kind !== kind()) return;
  const vol = decode(buffer);
  let sum = 0;
  for (let i = 0; i < vol.data.length; i++) sum += vol.data[i];
  const wave = state.wave;
  if (wave.length && meta.timestamp < wave[wave.length - 1][0]) wave.length = 0;
  wave.push([meta.timestamp, sum]);
  while (wave.length && wave[0][0] < meta.timestamp - WINDOW_S) wave.shift();
  state.latest = vol;
  $("status").textContent = `seq ${meta.seq}  ${meta.kind} (${meta.method}, ` +
    `${meta.iterations} it)  latency ${meta.latency_ms.toFixed(0)} ms  lag ${meta.lag_frames} frames`;
  if (state.drawn) {
    state.drawn = false;
    requestAnimationFrame(() => { drawVolume(); drawWave(); });
  }
}

function onParameters(b) {  // one breath's parameters (no binary message follows)
  const p = b.tidal ?? b.preview, pct = (v) => (v == null ? "-" : v.toFixed(0));
  $("breath").textContent = `breath ${b.index}: ${(60 / (b.end_s - b.start_s)).toFixed(1)}/min` +
    `  left/right ${pct(p.left_pct)}/${pct(p.right_pct)} %  CoV x/y/z ${pct(p.cov_x_pct)}/` +
    `${pct(p.cov_y_pct)}/${pct(p.cov_z_pct)} %  (${p.method})`;
}

function connect(sid) {
  if (state.ws) state.ws.close();
  state.ws = null; state.meta = null; state.latest = null; state.wave = [];
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!sid || !token) return;
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${proto}//${location.host}/v1/sessions/${sid}/stream`,
                           ["bearer", token]);
  ws.binaryType = "arraybuffer";
  ws.onopen = () => { $("status").textContent = `connected to ${sid}, waiting for volumes`; };
  ws.onmessage = (ev) => {
    if (typeof ev.data === "string") {
      const msg = JSON.parse(ev.data);
      if (msg.type === "status") {  // the session ended (failed): the server closes, no retry
        state.ws = null; state.meta = null;
        $("status").textContent = `session ${msg.status}: ${msg.reason ?? ""}`;
        return;
      }
      if (msg.type === "parameters") { onParameters(msg.breath); return; }
      state.meta = msg; return;
    }
    if (state.meta) onVolume(state.meta, ev.data);
    state.meta = null;
  };
  ws.onclose = (ev) => {
    if (state.ws !== ws) return;
    $("status").textContent = `disconnected (${ev.code} ${ev.reason || ""}); retrying in 2 s`;
    setTimeout(() => { if (state.ws === ws) connect(sid); }, 2000);
  };
  state.ws = ws;
}

async function listSessions() {
  const token = sessionStorage.getItem(TOKEN_KEY), select = $("session");
  if (!token) return;
  const r = await fetch("/v1/sessions?status=open", {
    headers: { Authorization: `Bearer ${token}` }, cache: "no-store" });
  if (!r.ok) {
    const body = await r.json().catch(() => ({}));
    $("status").textContent = `cannot list sessions: ${r.status} ${body.error?.reason ?? ""}`;
    return;
  }
  const { sessions } = await r.json(), current = select.value;
  select.replaceChildren(new Option("(choose a session)", ""), ...sessions.map((s) =>
    new Option(`${s.patient_label ?? s.id.slice(0, 8)} · ${s.grid.join("x")} · ` +
               `${s.settings.method}`, s.id)));
  select.value = sessions.some((s) => s.id === current) ? current
    : (sessions.length === 1 ? sessions[0].id : "");
  if (select.value !== current) connect(select.value);
}

$("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
  $("token").value = "";
  listSessions();
});
$("forget").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY); connect(""); $("status").textContent = "Token forgotten.";
});
$("refresh").addEventListener("click", listSessions);
$("session").addEventListener("change", (ev) => connect(ev.target.value));
for (const id of ["p", "r", "c"]) $(id).addEventListener("input", drawVolume);
for (const radio of document.querySelectorAll("input[name=kind]")) {
  radio.addEventListener("change", () => { state.wave = []; state.latest = null; });
}
listSessions();
