// colormap.js — 256-entry RGB lookup tables for the heat overlay.
// jet (MATLAB's): r = clamp(1.5 − |4x − 3|), g = clamp(1.5 − |4x − 2|),
// b = clamp(1.5 − |4x − 1|), dark blue at 0 through dark red at 1.
// hot: r = clamp(3x), g = clamp(3x − 1), b = clamp(3x − 2), black through
// red and yellow to white. x = value / 255.

const clamp01 = (v) => Math.min(1, Math.max(0, v));

function build(fn) {
  const lut = new Uint8Array(256 * 3);
  for (let i = 0; i < 256; i++) {
    const [r, g, b] = fn(i / 255);
    lut[3 * i] = Math.round(255 * clamp01(r));
    lut[3 * i + 1] = Math.round(255 * clamp01(g));
    lut[3 * i + 2] = Math.round(255 * clamp01(b));
  }
  return lut;
}

/** The colormaps by name; each is a Uint8Array of 256 RGB triples. */
export const colormaps = {
  jet: build((x) => [1.5 - Math.abs(4 * x - 3), 1.5 - Math.abs(4 * x - 2), 1.5 - Math.abs(4 * x - 1)]),
  hot: build((x) => [3 * x, 3 * x - 1, 3 * x - 2]),
};
