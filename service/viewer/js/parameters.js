// Per-breath parameters (docs/worker.md, "Parameters stream"): the session's breaths from
// GET /v1/sessions/{id}/parameters (so the trend survives a reload), then those the stream
// sends; minute values over the last minute of breaths.

const KEEP_S = 3600;
const MINUTE_S = 60;

/** The wall time (s) an entry was published: its stream id's millisecond part. */
const entryTime = (id) => Number(id.split("-")[0]) / 1000;

/** The regional part of a breath: the main method's tidal image when there is one. */
const regional = (b) => b.tidal ?? b.preview;
const ventral = (r) => r.ventral_pct ?? (r.layer_pct ? r.layer_pct[0] + r.layer_pct[1] : null);
const mean = (xs) => {
  const ok = xs.filter((x) => x != null && Number.isFinite(x));
  return ok.length ? ok.reduce((a, b) => a + b, 0) / ok.length : null;
};

export class Breaths {
  constructor() { this.entries = []; this.ids = new Set(); }

  reset() { this.entries = []; this.ids = new Set(); }

  /** Add entries ({id, breath}) not seen yet; oldest first. */
  add(entries) {
    for (const e of entries) {
      if (this.ids.has(e.id)) continue;
      this.ids.add(e.id);
      this.entries.push(e);
    }
    this.entries.sort((a, b) => entryTime(a.id) - entryTime(b.id));
    const oldest = entryTime(this.entries.at(-1)?.id ?? "0") - KEEP_S;
    while (this.entries.length && entryTime(this.entries[0].id) < oldest) {
      this.ids.delete(this.entries.shift().id);
    }
  }

  /** Every page of the endpoint, following `next`. */
  async load(sid, headers) {
    let since = null;
    for (;;) {
      const q = new URLSearchParams({ limit: "1000", ...(since ? { since } : {}) });
      const r = await fetch(`/v1/sessions/${sid}/parameters?${q}`, { headers, cache: "no-store" });
      if (!r.ok) throw new Error(`parameters: ${r.status}`);
      const page = await r.json();
      this.add(page.entries);
      if (!page.next) return;
      since = page.next;
    }
  }

  /** Minute values over the breaths that ended in the last MINUTE_S of device time. */
  minute() {
    const last = this.entries.at(-1)?.breath;
    if (!last) return null;
    const recent = this.entries.map((e) => e.breath)
      .filter((b) => b.end_s > last.end_s - MINUTE_S && b.end_s <= last.end_s);
    const dur = mean(recent.map((b) => b.end_s - b.start_s));
    const reg = recent.map(regional);
    return {
      breaths: recent.length, method: regional(last).method,
      rate: dur ? 60 / dur : null,
      tiv: mean(recent.map((b) => b.preview.tiv)),
      delta_eeli: last.preview.delta_eeli,
      left: mean(reg.map((r) => r.left_pct)), ventral: mean(reg.map(ventral)),
      cranial: mean(reg.map((r) => r.cranial_pct)),
      cov_x: mean(reg.map((r) => r.cov_x_pct)), cov_y: mean(reg.map((r) => r.cov_y_pct)),
      cov_z: mean(reg.map((r) => r.cov_z_pct)), gi: mean(reg.map((r) => r.gi)),
      silent: mean(reg.map((r) => r.silent_pct)),
      silent_dep: mean(reg.map((r) => r.silent_dependent_pct)),
      silent_nondep: mean(reg.map((r) => r.silent_nondependent_pct)),
    };
  }

  /** One trend point per breath. */
  points() {
    return this.entries.map(({ id, breath: b }) => ({
      t: entryTime(id), tiv: b.preview.tiv, rate: 60 / (b.end_s - b.start_s),
      left: regional(b).left_pct ?? null }));
  }
}

const f = (v, digits = 0) => (v == null || !Number.isFinite(v) ? "–" : v.toFixed(digits));
const split = (a) => (a == null ? "–" : `${f(a)} / ${f(100 - a)}`);

/** The minute values as [label, value, unit] rows. */
export function minuteRows(m) {
  return [
    ["Resp. rate", f(m?.rate, 1), "/min"], ["TIV", f(m?.tiv, 1), "a.u."],
    ["ΔEELI", f(m?.delta_eeli, 1), "a.u."], ["Left / right", split(m?.left), "%"],
    ["Ventral / dorsal", split(m?.ventral), "%"], ["Cranial / caudal", split(m?.cranial), "%"],
    ["CoV x / y / z", `${f(m?.cov_x)} / ${f(m?.cov_y)} / ${f(m?.cov_z)}`, "%"],
    ["GI", f(m?.gi, 2), ""], ["Silent spaces", f(m?.silent, 1), "%"],
    ["  dependent / non-dep.", `${f(m?.silent_dep, 1)} / ${f(m?.silent_nondep, 1)}`, "%"],
  ];
}
