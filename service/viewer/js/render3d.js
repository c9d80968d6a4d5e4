// The optional 3D render of the tidal image: NiiVue (vendored UMD bundle, 2.3 MB, loaded only
// when the user asks for 3D) volume-renders a NIfTI-1 image built here from the volume.
import { extent } from "./images.js";

const SCRIPT = "/viewer/vendor/niivue.umd.js";
let loading = null;

function niivue() {
  loading ??= new Promise((resolve, reject) => {
    const script = Object.assign(document.createElement("script"), { src: SCRIPT });
    script.onload = () => resolve(globalThis.niivue);
    script.onerror = () => reject(new Error("NiiVue did not load"));
    document.head.append(script);
  });
  return loading;
}

/** A NIfTI-1 file (.nii, 352-byte header, float32) of -volume in percent (clinical sign).
 * World axes RAS (mm): columns run patient right to left (-x), rows anterior to posterior
 * (-y), planes caudal to cranial (+z); the grid spans the domain's bounding box. */
function nifti({ shape: [P, R, C], data }, geometry) {
  const { width, depth, height } = extent(geometry);
  const [dx, dy, dz] = [1000 * width / C, 1000 * depth / R, 1000 * height / P];
  const buffer = new ArrayBuffer(352 + 4 * data.length), h = new DataView(buffer);
  h.setInt32(0, 348, true);  // sizeof_hdr
  [3, C, R, P, 1, 1, 1, 1].forEach((n, i) => h.setInt16(40 + 2 * i, n, true));  // dim
  h.setInt16(70, 16, true); h.setInt16(72, 32, true);  // datatype float32, bitpix
  [1, dx, dy, dz, 1, 1, 1, 1].forEach((v, i) => h.setFloat32(76 + 4 * i, v, true));  // pixdim
  h.setFloat32(108, 352, true); h.setFloat32(112, 1, true);  // vox_offset, scl_slope
  h.setUint8(123, 2);  // xyzt_units: mm
  h.setInt16(254, 1, true);  // sform_code: scanner
  const srow = [[-dx, 0, 0, width * 500], [0, -dy, 0, depth * 500], [0, 0, dz, 0]];
  srow.flat().forEach((v, i) => h.setFloat32(280 + 4 * i, v, true));
  [0x6e, 0x2b, 0x31, 0].forEach((b, i) => h.setUint8(344 + i, b));  // magic "n+1"
  const out = new Float32Array(buffer, 352);
  for (let i = 0; i < data.length; i++) out[i] = -100 * data[i];
  return buffer;
}

/** Volume-renders tidal images on `canvas`: ventilation (impedance rise) blue to cyan above 20 % of
 * the colour limit, impedance fall in red. */
export class Render3D {
  constructor(canvas) { this.canvas = canvas; this.nv = null; this.key = null; }

  /** Show `volume` (once per `key`, e.g. its seq) with the colour limit (percent). */
  async show(volume, key, limit, geometry) {
    const lib = await niivue();
    if (!this.nv) {
      this.nv = new lib.Niivue({ backColor: [0.07, 0.07, 0.07, 1], show3Dcrosshair: false,
                                 isColorbar: false, loadingText: "", isResizeCanvas: false });
      await this.nv.attachToCanvas(this.canvas);
      this.nv.setSliceType(this.nv.sliceTypeRender);
    }
    if (`${key}|${limit}` === this.key) return;
    this.key = `${key}|${limit}`;
    const image = await lib.NVImage.new(nifti(volume, geometry), "tidal.nii", "blue2cyan", 1, null,
                                        0.2 * limit, limit, true, 0.02, false, false, "red");
    image.cal_minNeg = -limit; image.cal_maxNeg = -0.2 * limit;
    for (const old of [...this.nv.volumes]) this.nv.removeVolume(old);
    this.nv.addVolume(image);
  }
}
