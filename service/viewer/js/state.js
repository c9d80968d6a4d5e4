// What the screen is showing, stated plainly: one level and one sentence. A clinician must
// never see an old image as if it were current: past STALE_AFTER_S the image is marked stale.

const STALE_AFTER_S = 3;

/** Close reasons of the stream (docs/service-api.md, Auth) in words. */
const REFUSALS = {
  missing_token: "no token was sent", invalid_token: "the token is not valid for this server",
  expired_token: "the token has expired", revoked_token: "the token was revoked",
  insufficient_scope: "the token may not read volumes (needs volumes:read)",
  session_not_permitted: "the token is not for this patient's session",
  unbound_token: "the token must name its session",
};

export function refusal(reason) {
  return `Token refused: ${REFUSALS[reason] ?? reason}. Enter a valid viewer token.`;
}

const age = (s) => (s < 90 ? `${s.toFixed(0)} s` : `${(s / 60).toFixed(0)} min`);

/**
 * The level ("idle", "refused", "failed", "closed", "disconnected", "warming", "stale", "live")
 * and the sentence for the monitor's state.
 * `m`: {connection: "none"|"connecting"|"open"|"closed", refused, failure, session (GET
 * session), connectedAt, lastImageAt (wall ms the latest dynamic image was taken)}.
 */
export function describe(m, now) {
  const imageAge = m.lastImageAt != null ? (now - m.lastImageAt) / 1000 : null;
  const last = imageAge != null ? ` Last image ${age(imageAge)} old.` : "";
  if (m.refused) return { level: "refused", text: m.refused };
  if (m.failure != null || m.session?.status === "failed") {
    return { level: "failed", text: `Session failed: ${m.failure ?? m.session?.failure_reason ?? "no reason given"}.${last}` };
  }
  if (m.session?.status === "closed") {
    return { level: "closed", text: `Session closed (${m.session.close_reason ?? "ended"}).${last}` };
  }
  if (m.connection === "none") return { level: "idle", text: "Choose a session." };
  if (m.connection !== "open") {
    return { level: "disconnected", text: `Disconnected from the server; reconnecting.${last}` };
  }
  if (imageAge == null) return { level: "warming", text: warming(m, now) };
  if (imageAge > STALE_AFTER_S) {
    return { level: "stale", text: `STALE: no new image for ${age(imageAge)}; the image shown is old.` };
  }
  return { level: "live", text: "Live." };
}

/**
 * The main method's warm start while it runs, e.g. "D2IP warm start 40 %" (GET session's
 * `warmup`); null when none runs (none needed, loaded from the store, or over).
 */
export function warmup(s) {
  const w = s?.warmup;
  if (!w || w.done >= w.total) return null;
  return `${w.step} ${Math.floor((100 * w.done) / w.total)} %`;
}

/** Warming up: what the worker is doing before the first image (from GET session). */
function warming(m, now) {
  const since = age((now - m.connectedAt) / 1000), s = m.session;
  if (!s) return `Warming up (${since}).`;
  const c = s.counters;
  if (!s.worker) return `Warming up: waiting for a worker to take the session (${since}).`;
  if (c.accepted === 0) return `Warming up: waiting for the belt's first frames (${since}).`;
  const w = warmup(s);
  if (w) return `Warming up: ${w} (${since}).`;
  if (c.reconstructed + c.coalesced === 0) {
    return `Warming up: the worker builds the forward model and the ${s.settings.method} ` +
      `reconstructor; ${c.accepted} frames are waiting (${since}).`;
  }
  return `Warming up: first images on their way (${since}).`;
}
