// The curves (uPlot): the global impedance curve at frame rate with the breaths marked, and the
// regional curves (left/right, ventral/dorsal, cranial/caudal). x is wall-clock time.
import uPlot from "../vendor/uPlot.esm.js";

const WINDOW_S = 60;
const GAP_S = 0.5;  // a longer pause between images breaks the curve
const UNIT = "ΔZ (a.u.)";
const AXIS = { stroke: "#aaa", grid: { stroke: "#2a2a2a" }, ticks: { stroke: "#444" } };

/** Sums of the clinical-sign volume (-Δσ/σ0): global and by halves. Columns run patient right
 * to left, rows anterior to posterior, planes caudal to cranial. */
export function regionalSums({ shape: [P, R, C], data }) {
  const s = { global: 0, left: 0, right: 0, ventral: 0, dorsal: 0, cranial: 0, caudal: 0 };
  for (let p = 0; p < P; p++) {
    let plane = 0;
    for (let r = 0; r < R; r++) {
      let row = 0;
      for (let c = 0, k = (p * R + r) * C; c < C; c++, k++) {
        const v = -data[k];
        row += v;
        if (c < C / 2) s.right += v; else s.left += v;
      }
      if (r < R / 2) s.ventral += row; else s.dorsal += row;
      plane += row;
    }
    if (p < P / 2) s.caudal += plane; else s.cranial += plane;
    s.global += plane;
  }
  return s;
}

/** A uPlot plugin drawing each breath: a line at its start, a triangle at end-inspiration. */
function breathMarks(breaths) {
  return {
    hooks: {
      draw: (u) => {
        const { ctx } = u, { top, height } = u.bbox, [x0, x1] = [u.scales.x.min, u.scales.x.max];
        ctx.save();
        ctx.strokeStyle = "rgba(255,220,0,0.6)"; ctx.fillStyle = "rgba(255,220,0,0.9)";
        ctx.lineWidth = 1;
        for (const b of breaths) {
          if (b.start < x0 || b.start > x1) continue;
          const x = Math.round(u.valToPos(b.start, "x", true));
          ctx.beginPath(); ctx.moveTo(x, top); ctx.lineTo(x, top + height); ctx.stroke();
          const xi = u.valToPos(b.peak, "x", true);
          ctx.beginPath(); ctx.moveTo(xi - 5, top + 2); ctx.lineTo(xi + 5, top + 2);
          ctx.lineTo(xi, top + 10); ctx.fill();
        }
        ctx.restore();
      },
    },
  };
}

function chart(el, title, series, width, height, plugins = []) {
  return new uPlot({
    title, width, height, plugins,
    scales: { x: { time: true } },
    axes: [{ ...AXIS }, { ...AXIS, label: UNIT, size: 60 }],
    series: [{}, ...series.map(([label, stroke]) => ({ label, stroke, width: 1.5 }))],
    legend: { live: false },
    cursor: { sync: { key: "eitmon" } },
  }, [[], ...series.map(() => [])], el);
}

/** The live curves of one session, kept for WINDOW_S. */
export class Curves {
  constructor() {
    this.breaths = [];
    this.x = []; this.y = { global: [], left: [], right: [], ventral: [], dorsal: [], cranial: [], caudal: [] };
    this.global = chart(document.getElementById("global-chart"), null,
                        [["global", "#6cf"]], 960, 170, [breathMarks(this.breaths)]);
    this.lr = chart(document.getElementById("lr-chart"), "Left / right",
                    [["left", "#f90"], ["right", "#6cf"]], 316, 140);
    this.vd = chart(document.getElementById("vd-chart"), "Ventral / dorsal",
                    [["ventral", "#f90"], ["dorsal", "#6cf"]], 316, 140);
    this.cc = chart(document.getElementById("cc-chart"), "Cranial / caudal",
                    [["cranial", "#f90"], ["caudal", "#6cf"]], 316, 140);
    this.dirty = false;
  }

  reset() {
    this.x.length = 0; this.breaths.length = 0;
    for (const ys of Object.values(this.y)) ys.length = 0;
    this.dirty = true;
  }

  /** One dynamic image's sums at wall time t (s). */
  push(t, sums) {
    const { x, y } = this;
    if (x.length && t < x[x.length - 1]) this.reset();  // the stream started over
    if (x.length && t - x[x.length - 1] > GAP_S) {  // frames missing: break the line
      x.push(t - GAP_S / 2);
      for (const ys of Object.values(y)) ys.push(null);
    }
    x.push(t);
    for (const [k, ys] of Object.entries(y)) ys.push(sums[k]);
    let drop = 0;
    while (drop < x.length && x[drop] < t - WINDOW_S) drop++;
    if (drop) { x.splice(0, drop); for (const ys of Object.values(y)) ys.splice(0, drop); }
    this.dirty = true;
  }

  /** A detected breath: its start and end-inspiration, wall seconds. */
  breath(start, peak) {
    this.breaths.push({ start, peak });
    while (this.breaths.length && this.breaths[0].start < start - WINDOW_S) this.breaths.shift();
    this.dirty = true;
  }

  draw() {
    if (!this.dirty) return;
    this.dirty = false;
    const { x, y } = this;
    this.global.setData([x, y.global]);
    this.lr.setData([x, y.left, y.right]);
    this.vd.setData([x, y.ventral, y.dorsal]);
    this.cc.setData([x, y.cranial, y.caudal]);
  }
}

/** The trend of the per-breath parameters over the chosen window: TIV and rate. */
export class Trend {
  constructor() {
    this.plot = new uPlot({
      width: 960, height: 170,
      scales: { x: { time: true }, tiv: {}, rate: {} },
      axes: [{ ...AXIS }, { ...AXIS, scale: "tiv", label: "TIV (a.u.)", size: 60 },
             { ...AXIS, scale: "rate", side: 1, label: "rate (/min)", grid: { show: false } }],
      series: [{}, { label: "TIV", stroke: "#6cf", scale: "tiv", width: 1.5, points: { show: true, size: 4 } },
               { label: "rate /min", stroke: "#f90", scale: "rate", width: 1.5 },
               { label: "left %", stroke: "#c8c", scale: "rate", width: 1 }],
      legend: { live: false },
    }, [[], [], [], []], document.getElementById("trend-chart"));
  }

  /** Points [{t (wall s), tiv, rate, left}] of the last `windowS` seconds; a younger session
   * fills the chart (from a minute before its first breath). */
  show(points, windowS, now) {
    const shown = points.filter((q) => q.t >= now - windowS);
    this.plot.setData([shown.map((q) => q.t), shown.map((q) => q.tiv), shown.map((q) => q.rate),
                       shown.map((q) => q.left)]);
    this.plot.setScale("x", { min: Math.max(now - windowS, (shown[0]?.t ?? now) - 60), max: now });
  }
}
