// The WebSocket wire format (docs/service-api.md, "Live volumes"): per volume a JSON text
// message, then a binary message with a 32-byte little-endian header ("EITV", version, dtype,
// header length, P, R, C, reserved, seq) and P*R*C float16/float32 values in C order over
// (P planes bottom to top, R rows anterior to posterior, C columns patient right to left).

const MAGIC = 0x56544945;  // "EITV" read as a little-endian u32
const FLOAT16 = 1, FLOAT32 = 2;

/** A decoded volume: shape [P, R, C], values as Float32Array (Δσ/σ0), seq. */
function decodeVolume(buffer) {
  const view = new DataView(buffer);
  if (view.getUint32(0, true) !== MAGIC || view.getUint8(4) !== 1) {
    throw new Error("not an eitmon volume");
  }
  const dtype = view.getUint8(5), offset = view.getUint16(6, true);
  const shape = [view.getUint32(8, true), view.getUint32(12, true), view.getUint32(16, true)];
  const n = shape[0] * shape[1] * shape[2];
  let data;
  if (dtype === FLOAT32) data = new Float32Array(buffer.slice(offset, offset + 4 * n));
  else if (dtype === FLOAT16) data = Float32Array.from(new Float16Array(buffer, offset, n));
  else throw new Error(`unknown dtype ${dtype}`);
  return { shape, data, seq: Number(view.getBigUint64(24, true)) };
}

/** Pairs each volume's metadata with the binary message that follows it. */
export class Pairing {
  constructor() { this.meta = null; }

  /** A parsed text message, or, for a binary one, {meta, volume}; null while unpaired. */
  accept(data) {
    if (typeof data === "string") {
      const msg = JSON.parse(data);
      if (msg.type !== "volume") return msg;
      this.meta = msg;
      return null;
    }
    const meta = this.meta;
    this.meta = null;
    return meta ? { type: "volume", meta, volume: decodeVolume(data) } : null;
  }
}
