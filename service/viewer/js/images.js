// Volumes as images: the fixed colour scale, the orthogonal slices and the colour bar.
// Values are shown in the clinical sign (impedance rises with air: -Δσ/σ0), in percent.
import { BERLIN } from "../vendor/colormap.js";

const PIXELS = 170;  // the longest side of a slice view, CSS pixels
const SCALE_BREATHS = 2;  // the scale is set from the first breaths ...
const SCALE_SECONDS = 20;  // ... or this much of the stream when no breath is detected

/** The session's colour scale: the largest |ΔZ| of the first breaths, then fixed; the user
 * can adjust it by powers of two (gain). Also remembers where the lungs ventilate. */
export class ColourScale {
  constructor() { this.reset(); }

  reset() {
    this.auto = 0; this.gain = 0; this.frozen = false; this.firstT = null; this.breaths = 0;
    this.activity = null;
  }

  /** The limit in percent: values at ±limit get the ends of the colour map. */
  get limit() { return (this.auto || 1) * 2 ** this.gain; }

  /** Learn from a preview volume until the scale is fixed; true when it just became fixed. */
  observe(volume, t) {
    if (this.frozen) return false;
    const d = volume.data;
    if (!this.activity || this.activity.length !== d.length) this.activity = new Float32Array(d.length);
    let most = 0;
    for (let i = 0; i < d.length; i++) {
      const a = Math.abs(d[i]);
      this.activity[i] += a;
      if (a > most) most = a;
    }
    this.auto = Math.max(this.auto, 100 * most);
    this.firstT ??= t;
    if (this.breaths >= SCALE_BREATHS || t - this.firstT >= SCALE_SECONDS) this.frozen = true;
    return this.frozen;
  }

  breath() { this.breaths += 1; }
}

/** Where to cut by default: the plane, row and column with the most ventilation, the column
 * in the patient's right half (columns run right to left), so the sagittal view cuts a lung. */
export function lungCuts(activity, [P, R, C]) {
  const plane = new Float64Array(P), row = new Float64Array(R), col = new Float64Array(C);
  for (let p = 0; p < P; p++) {
    for (let r = 0; r < R; r++) {
      for (let c = 0; c < C; c++) {
        const a = activity[(p * R + r) * C + c];
        plane[p] += a; row[r] += a; col[c] += a;
      }
    }
  }
  const argmax = (xs, lo, hi) => {
    let best = lo;
    for (let i = lo; i < hi; i++) if (xs[i] > xs[best]) best = i;
    return best;
  };
  return [argmax(plane, 0, P), argmax(row, 0, R), argmax(col, 0, Math.max(1, C >> 1))];
}

/** The physical size (m) of the grid: x width, y depth, z height (docs/service-api.md). */
export function extent(geometry) {
  const d = geometry?.domain ?? {};
  const width = d.width ?? 2 * (d.radius ?? 0.15), depth = d.depth ?? 2 * (d.radius ?? 0.15);
  return { width, depth, height: d.height ?? 0.2 };
}

/** The planes (fractional plane index) of the electrode rings. */
function electrodePlanes(geometry, P) {
  const { height } = extent(geometry);
  return (geometry?.electrodes?.ring_heights ?? []).map((z) => (z / height) * P);
}

/** One view: an offscreen canvas at voxel resolution drawn onto its canvas at physical aspect. */
class View {
  constructor(canvas, h, w, heightM, widthM) {
    this.canvas = canvas; this.h = h; this.w = w;
    const k = PIXELS / Math.max(heightM, widthM);
    canvas.width = Math.round(widthM * k); canvas.height = Math.round(heightM * k);
    this.off = new OffscreenCanvas(w, h);
    this.image = new ImageData(w, h);
    this.ctx = canvas.getContext("2d");
  }

  draw(value, limit, marks) {
    const px = this.image.data, { h, w } = this;
    const k = 127.5 / limit;
    for (let i = 0, q = 0; i < h; i++) {
      for (let j = 0; j < w; j++, q += 4) {
        // clinical sign: -Δσ/σ0 in %; +limit maps to index 0 (blue), -limit to 255 (red)
        const idx = Math.max(0, Math.min(255, Math.round(127.5 - k * 100 * value(i, j)))) * 3;
        px[q] = BERLIN[idx]; px[q + 1] = BERLIN[idx + 1]; px[q + 2] = BERLIN[idx + 2];
        px[q + 3] = 255;
      }
    }
    this.off.getContext("2d").putImageData(this.image, 0, 0);
    const { ctx, canvas } = this;
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(this.off, 0, 0, canvas.width, canvas.height);
    for (const { row, col, dash, colour } of marks) {
      ctx.strokeStyle = colour; ctx.setLineDash(dash); ctx.lineWidth = 1; ctx.beginPath();
      if (row != null) {
        const y = (row / h) * canvas.height;
        ctx.moveTo(0, y); ctx.lineTo(canvas.width, y);
      } else {
        const x = (col / w) * canvas.width;
        ctx.moveTo(x, 0); ctx.lineTo(x, canvas.height);
      }
      ctx.stroke();
    }
  }
}

const CUT = { dash: [2, 3], colour: "rgba(255,255,255,0.35)" };
const RING = { dash: [6, 4], colour: "rgba(255,220,0,0.8)" };

/** Axial, coronal and sagittal views of one pane. */
export class Slices {
  constructor(prefix) { this.prefix = prefix; this.views = null; this.key = ""; }

  setup(shape, geometry) {
    const [P, R, C] = shape, { width, depth, height } = extent(geometry);
    const el = (name) => document.getElementById(`${this.prefix}-${name}`);
    this.shape = shape; this.rings = electrodePlanes(geometry, P);
    this.views = [new View(el("axial"), R, C, depth, width), new View(el("coronal"), P, C, height, width),
                  new View(el("sagittal"), P, R, height, depth)];
    this.key = `${shape.join()}|${width},${depth},${height}`;
  }

  /** Draw `volume` cut at [p, r, c] with the colour limit (percent). */
  draw(volume, [p, r, c], limit, geometry) {
    const [P, R, C] = volume.shape, d = volume.data;
    const { width, depth, height } = extent(geometry);
    if (this.key !== `${volume.shape.join()}|${width},${depth},${height}`) this.setup(volume.shape, geometry);
    const neg = (x) => -x;  // clinical sign
    const [axial, coronal, sagittal] = this.views;
    const rings = this.rings.map((z) => ({ row: P - z, ...RING }));
    const planeRow = { row: P - 1 - p + 0.5, ...CUT };
    axial.draw((i, j) => neg(d[(p * R + i) * C + j]), limit,
               [{ row: r + 0.5, ...CUT }, { col: c + 0.5, ...CUT }]);
    coronal.draw((i, j) => neg(d[((P - 1 - i) * R + r) * C + j]), limit,
                 [...rings, planeRow, { col: c + 0.5, ...CUT }]);
    sagittal.draw((i, j) => neg(d[((P - 1 - i) * R + j) * C + c]), limit,
                  [...rings, planeRow, { col: r + 0.5, ...CUT }]);
  }
}

/** The colour bar: the map from +limit (top) to -limit (bottom), labelled in percent. */
export function drawColourBar(canvas, limit) {
  const ctx = canvas.getContext("2d"), h = canvas.height - 20, x0 = 4, bw = 14;
  ctx.fillStyle = "#111"; ctx.fillRect(0, 0, canvas.width, canvas.height);
  for (let y = 0; y < h; y++) {
    const idx = Math.round((y / (h - 1)) * 255) * 3;
    ctx.fillStyle = `rgb(${BERLIN[idx]},${BERLIN[idx + 1]},${BERLIN[idx + 2]})`;
    ctx.fillRect(x0, 10 + y, bw, 1);
  }
  ctx.fillStyle = "#ddd"; ctx.font = "11px system-ui, sans-serif"; ctx.textBaseline = "middle";
  const fmt = (v) => `${v > 0 ? "+" : ""}${v.toPrecision(2)} %`;
  ctx.fillText(fmt(limit), x0 + bw + 4, 10);
  ctx.fillText("0", x0 + bw + 4, 10 + h / 2);
  ctx.fillText(fmt(-limit), x0 + bw + 4, 10 + h);
  canvas.title = `ΔZ = −Δσ/σ₀ in %, from ${fmt(-limit)} to ${fmt(limit)}`;
}
