// viewer.js — the three-plane CT viewer. A Volume holds int16 HU voxels
// (i fastest, then j, then k) and optional uint8 heat on the same grid; a
// Viewer draws the axial (k), coronal (j) and sagittal (i) planes through
// one point on canvases, with window/level, the heat overlay and a
// crosshair. Coronal and sagittal show k upwards (superior at the top for
// slices sorted foot to head) and are drawn with physical aspect ratio.

import { colormaps } from "./colormap.js";

/** Window presets in HU: width and level. */
export const presets = {
  lung: { ww: 1500, wl: -600 },
  mediastinum: { ww: 350, wl: 50 },
  bone: { ww: 2000, wl: 400 },
};

/** The longest side of a displayed plane in CSS pixels. */
const BOX = 300;

/** Parses "a,b,c" into three numbers, or null when it is not that. */
function triple(s, integer) {
  if (!s) return null;
  const p = s.split(",").map((x) => Number(x.trim()));
  if (p.length !== 3 || p.some((v) => !Number.isFinite(v) || v <= 0 || (integer && !Number.isInteger(v)))) return null;
  return p;
}

const littleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * Builds a volume from the volume.bin response (ArrayBuffer and headers) and
 * optionally the heat.bin one; throws an Error naming what is inconsistent.
 */
export function makeVolume(vol, heat) {
  const dims = triple(vol.headers.get("X-Dims"), true);
  if (!dims) throw new Error(`volume.bin: bad or missing X-Dims header "${vol.headers.get("X-Dims")}" (want "cols,rows,slices")`);
  const spacing = triple(vol.headers.get("X-Spacing"), false) || [1, 1, 1];
  const n = dims[0] * dims[1] * dims[2];
  if (vol.buffer.byteLength !== 2 * n) {
    throw new Error(`volume.bin: ${vol.buffer.byteLength} bytes, but X-Dims ${dims.join("×")} needs ${2 * n} (int16)`);
  }
  let hu;
  if (littleEndian) {
    hu = new Int16Array(vol.buffer);
  } else {
    const dv = new DataView(vol.buffer);
    hu = new Int16Array(n);
    for (let x = 0; x < n; x++) hu[x] = dv.getInt16(2 * x, true);
  }
  let h = null;
  if (heat) {
    const hd = triple(heat.headers.get("X-Dims"), true);
    if (hd && hd.join() !== dims.join()) {
      throw new Error(`heat.bin: X-Dims ${hd.join("×")} differ from the volume's ${dims.join("×")}`);
    }
    if (heat.buffer.byteLength !== n) {
      throw new Error(`heat.bin: ${heat.buffer.byteLength} bytes, but the volume has ${n} voxels (uint8)`);
    }
    h = new Uint8Array(heat.buffer);
  }
  return { dims, spacing, hu, heat: h };
}

/**
 * Plane geometry: the slice axis, the horizontal (u) and vertical (v) axes,
 * and whether v grows upwards on screen.
 */
const PLANES = {
  axial: { axis: 2, u: 0, v: 1, up: false },
  coronal: { axis: 1, u: 0, v: 2, up: true },
  sagittal: { axis: 0, u: 1, v: 2, up: true },
};

/** The three-plane viewer bound to canvases and index labels. */
export class Viewer {
  /**
   * canvases: {axial, coronal, sagittal} canvas elements; labels: the same
   * for the index labels; onWindow(ww, wl) is called after a drag changes
   * the window.
   */
  constructor(canvases, labels, onWindow) {
    this.canvases = canvases;
    this.labels = labels;
    this.onWindow = onWindow || (() => {});
    this.vol = null;
    this.pos = [0, 0, 0];
    this.ww = presets.lung.ww;
    this.wl = presets.lung.wl;
    this.overlay = { show: true, opacity: 0.5, threshold: 64, cmap: "jet" };
    this.lut = null;
    this.pending = new Set();
    this.scratch = {};
    for (const name of Object.keys(PLANES)) this.bind(name, canvases[name]);
  }

  /** Shows vol (from makeVolume), centred. */
  setVolume(vol) {
    this.vol = vol;
    this.pos = vol.dims.map((d) => Math.floor(d / 2));
    for (const name of Object.keys(PLANES)) this.layout(name);
    this.renderAll();
  }

  /** Sets the window width and level in HU. */
  setWindow(ww, wl) {
    this.ww = Math.max(1, Math.round(ww));
    this.wl = Math.round(wl);
    this.lut = null;
    this.renderAll();
  }

  /** Updates overlay settings: {show, opacity 0..1, threshold 0..255, cmap}. */
  setOverlay(o) {
    Object.assign(this.overlay, o);
    this.renderAll();
  }

  /** Moves the crosshair to voxel [i, j, k] (clamped into the grid). */
  goTo(ijk) {
    if (!this.vol) return;
    this.pos = ijk.map((v, a) => Math.min(this.vol.dims[a] - 1, Math.max(0, Math.round(v))));
    this.renderAll();
  }

  /** The slice index shown in plane name. */
  index(name) {
    return this.pos[PLANES[name].axis];
  }

  /** Moves plane name by delta slices. */
  step(name, delta) {
    if (!this.vol) return;
    const a = PLANES[name].axis;
    const v = Math.min(this.vol.dims[a] - 1, Math.max(0, this.pos[a] + delta));
    if (v === this.pos[a]) return;
    this.pos[a] = v;
    this.renderAll();
  }

  /** Sizes canvas name for the physical aspect ratio of its plane. */
  layout(name) {
    const p = PLANES[name];
    const { dims, spacing } = this.vol;
    const w = dims[p.u] * spacing[p.u];
    const h = dims[p.v] * spacing[p.v];
    const s = BOX / Math.max(w, h);
    const c = this.canvases[name];
    c.width = Math.max(1, Math.round(w * s));
    c.height = Math.max(1, Math.round(h * s));
    const off = document.createElement("canvas");
    off.width = dims[p.u];
    off.height = dims[p.v];
    this.scratch[name] = { canvas: off, ctx: off.getContext("2d"), img: off.getContext("2d").createImageData(off.width, off.height) };
  }

  renderAll() {
    for (const name of Object.keys(PLANES)) this.pending.add(name);
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      for (const name of this.pending) this.render(name);
      this.pending.clear();
    });
  }

  /** Gray lookup over every int16 HU value for the current window. */
  grayLUT() {
    if (this.lut) return this.lut;
    const lut = new Uint8Array(65536);
    const lo = this.wl - this.ww / 2;
    for (let x = 0; x < 65536; x++) {
      const g = ((x - 32768 - lo) / this.ww) * 255;
      lut[x] = g <= 0 ? 0 : g >= 255 ? 255 : g;
    }
    this.lut = lut;
    return lut;
  }

  /** Draws plane name: windowed HU, heat blended over it, crosshair. */
  render(name) {
    if (!this.vol) return;
    const p = PLANES[name];
    const { dims, hu, heat } = this.vol;
    const { canvas: off, ctx: octx, img } = this.scratch[name];
    const nu = dims[p.u], nv = dims[p.v];
    const stride = [1, dims[0], dims[0] * dims[1]];
    const base = this.pos[p.axis] * stride[p.axis];
    const su = stride[p.u], sv = stride[p.v];
    const lut = this.grayLUT();
    const o = this.overlay;
    const showHeat = heat && o.show && o.opacity > 0;
    const cmap = colormaps[o.cmap] || colormaps.jet;
    const a = o.opacity, thr = Math.max(1, o.threshold);
    const px = img.data;
    for (let y = 0; y < nv; y++) {
      const v = p.up ? nv - 1 - y : y;
      let idx = base + v * sv;
      let q = 4 * y * nu;
      for (let u = 0; u < nu; u++, idx += su, q += 4) {
        const g = lut[hu[idx] + 32768];
        let r = g, gg = g, b = g;
        if (showHeat) {
          const h = heat[idx];
          if (h >= thr) {
            r = (1 - a) * g + a * cmap[3 * h];
            gg = (1 - a) * g + a * cmap[3 * h + 1];
            b = (1 - a) * g + a * cmap[3 * h + 2];
          }
        }
        px[q] = r;
        px[q + 1] = gg;
        px[q + 2] = b;
        px[q + 3] = 255;
      }
    }
    octx.putImageData(img, 0, 0);
    const c = this.canvases[name];
    const ctx = c.getContext("2d");
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(off, 0, 0, c.width, c.height);
    // Crosshair through the other two planes' positions.
    const cu = (this.pos[p.u] + 0.5) * (c.width / nu);
    const cvIdx = p.up ? nv - 1 - this.pos[p.v] : this.pos[p.v];
    const cv = (cvIdx + 0.5) * (c.height / nv);
    ctx.strokeStyle = "rgba(80, 220, 120, 0.55)";
    ctx.lineWidth = 1;
    ctx.beginPath();
    ctx.moveTo(Math.round(cu) + 0.5, 0);
    ctx.lineTo(Math.round(cu) + 0.5, c.height);
    ctx.moveTo(0, Math.round(cv) + 0.5);
    ctx.lineTo(c.width, Math.round(cv) + 0.5);
    ctx.stroke();
    c.dataset.index = String(this.pos[p.axis]);
    this.labels[name].textContent = `${this.pos[p.axis] + 1} / ${dims[p.axis]}`;
  }

  /** Wires wheel, keys and pointer gestures of canvas c (plane name). */
  bind(name, c) {
    let acc = 0;
    c.addEventListener("wheel", (e) => {
      if (!this.vol) return;
      e.preventDefault();
      const d = e.deltaMode === 0 ? e.deltaY : e.deltaY * 40;
      if (Math.abs(d) >= 50) {
        acc = 0;
        this.step(name, Math.sign(d));
        return;
      }
      acc += d;
      if (Math.abs(acc) >= 50) {
        this.step(name, Math.sign(acc));
        acc = 0;
      }
    }, { passive: false });
    c.addEventListener("keydown", (e) => {
      if (!this.vol) return;
      const n = this.vol.dims[PLANES[name].axis];
      const steps = { ArrowUp: 1, ArrowRight: 1, ArrowDown: -1, ArrowLeft: -1, PageUp: 10, PageDown: -10, Home: -n, End: n };
      if (!(e.key in steps)) return;
      e.preventDefault();
      this.step(name, steps[e.key]);
    });
    let drag = null;
    c.addEventListener("pointerdown", (e) => {
      if (!this.vol || e.button !== 0) return;
      c.setPointerCapture(e.pointerId);
      c.focus();
      drag = { x: e.clientX, y: e.clientY, ww: this.ww, wl: this.wl, moved: false };
    });
    c.addEventListener("pointermove", (e) => {
      if (!drag) return;
      const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
      if (!drag.moved && Math.hypot(dx, dy) < 4) return;
      drag.moved = true;
      const k = Math.max(1, drag.ww / 250);
      this.setWindow(drag.ww + dx * k, drag.wl + dy * k);
      this.onWindow(this.ww, this.wl);
    });
    const end = (e) => {
      if (!drag) return;
      const clicked = !drag.moved;
      drag = null;
      if (!clicked || e.type !== "pointerup") return;
      const p = PLANES[name];
      const r = c.getBoundingClientRect();
      const nu = this.vol.dims[p.u], nv = this.vol.dims[p.v];
      const u = Math.floor(((e.clientX - r.left) / r.width) * nu);
      let v = Math.floor(((e.clientY - r.top) / r.height) * nv);
      if (p.up) v = nv - 1 - v;
      const pos = this.pos.slice();
      pos[p.u] = u;
      pos[p.v] = v;
      this.goTo(pos);
    };
    c.addEventListener("pointerup", end);
    c.addEventListener("pointercancel", end);
  }
}
