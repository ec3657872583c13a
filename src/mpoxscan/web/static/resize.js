// The network's input, cut on the phone exactly as mpoxscan.preprocess.Preprocessing.resize_crop cuts it in Python:
// the short side resized to input_size / crop_pct with Pillow's `resize(..., BICUBIC, reducing_gap=3.0)`, then the
// centre square. Written by hand because a canvas resizes with the browser's own filter (measured: 3 top-class flips
// in 302 real photos, probabilities up to 0.33 apart) and no JavaScript library reproduces Pillow's arithmetic.
// Pillow's algorithm, reproduced: (1) when the photo is over 3x the target, `reduce` averages whole factor x factor
// blocks (partial blocks at the edges average what they hold), rounding as Pillow's integer code does; (2) a
// separable bicubic convolution (a = -0.5; support widened by the scale when shrinking; weights normalised, then
// fixed point with 22 fractional bits), horizontal pass first, each pass rounded to 8 bits.
"use strict";

const MPOXSCAN_RESIZE = (() => {
  const PRECISION_BITS = 22, ONE = 1 << PRECISION_BITS, HALF = 1 << (PRECISION_BITS - 1);
  const SUPPORT = 2.0;  // bicubic

  function bicubic(x) {
    const a = -0.5;
    if (x < 0) x = -x;
    if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
    if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
    return 0;
  }

  // Python's round(): halves go to the even neighbour.
  function roundHalfEven(x) {
    const r = Math.round(x);
    return Math.abs(x - Math.trunc(x)) === 0.5 && r % 2 !== 0 ? r - 1 : r;
  }

  // Weights of output positions [from, from + count) of a resize of [in0, in1) (input size inSize) to outSize.
  function coefficients(inSize, in0, in1, outSize, from, count) {
    const scale = (in1 - in0) / outSize, filterscale = Math.max(scale, 1), support = SUPPORT * filterscale;
    const ksize = Math.ceil(support) * 2 + 1;
    const kk = new Int32Array(count * ksize), bounds = new Int32Array(count * 2), w = new Float64Array(ksize);
    for (let i = 0; i < count; i++) {
      const center = in0 + (from + i + 0.5) * scale;
      let xmin = Math.trunc(center - support + 0.5), xmax = Math.trunc(center + support + 0.5);
      if (xmin < 0) xmin = 0;
      if (xmax > inSize) xmax = inSize;
      xmax -= xmin;
      let ww = 0;
      for (let x = 0; x < xmax; x++) { w[x] = bicubic((x + xmin - center + 0.5) / filterscale); ww += w[x]; }
      for (let x = 0; x < xmax; x++) {
        const k = ww !== 0 ? w[x] / ww : w[x];
        kk[i * ksize + x] = k < 0 ? Math.trunc(-0.5 + k * ONE) : Math.trunc(0.5 + k * ONE);
      }
      bounds[2 * i] = xmin; bounds[2 * i + 1] = xmax;
    }
    return { kk, bounds, ksize };
  }

  function clip8(ss) { const v = ss >> PRECISION_BITS; return v < 0 ? 0 : v > 255 ? 255 : v; }

  // Pillow's multiplier for averaging n values: (sum + n/2) * m >> 24, with m computed in single precision.
  function multiplier(n) { return Math.trunc(Math.fround(4294967296 / Math.fround(256 * n))); }

  // Average fx x fy blocks of an RGBA source read one block row at a time by rows(y0, h).
  function reduce(rows, w, h, fx, fy) {
    const rw = Math.ceil(w / fx), rh = Math.ceil(h / fy), out = new Uint8ClampedArray(rw * rh * 4);
    const sums = new Float64Array(rw * 3);
    for (let by = 0; by < rh; by++) {
      const y0 = by * fy, bh = Math.min(fy, h - y0), strip = rows(y0, bh);
      sums.fill(0);
      for (let y = 0; y < bh; y++) {
        for (let x = 0; x < w; x++) {
          const s = ((x / fx) | 0) * 3, p = (y * w + x) * 4;
          sums[s] += strip[p]; sums[s + 1] += strip[p + 1]; sums[s + 2] += strip[p + 2];
        }
      }
      for (let bx = 0; bx < rw; bx++) {
        const n = Math.min(fx, w - bx * fx) * bh, m = multiplier(n), amend = Math.floor(n / 2), o = (by * rw + bx) * 4;
        for (let c = 0; c < 3; c++) out[o + c] = Math.floor(((sums[bx * 3 + c] + amend) * m) / 16777216);
        out[o + 3] = 255;
      }
    }
    return { data: out, w: rw, h: rh };
  }

  // The centre size x size square of `image` (RGBA, w x h) resized to outW x outH from the box [0, boxW) x [0, boxH).
  function resampleCrop(image, boxW, boxH, outW, outH, left, top, size) {
    const { data, w, h } = image;
    const hc = coefficients(w, 0, boxW, outW, left, size), vc = coefficients(h, 0, boxH, outH, top, size);
    let first = h, last = 0;  // the input rows the vertical pass reads
    for (let i = 0; i < size; i++) {
      first = Math.min(first, vc.bounds[2 * i]); last = Math.max(last, vc.bounds[2 * i] + vc.bounds[2 * i + 1]);
    }
    const rowsNeeded = last - first, temp = new Uint8ClampedArray(rowsNeeded * size * 4);
    for (let y = 0; y < rowsNeeded; y++) {
      const line = (first + y) * w * 4;
      for (let i = 0; i < size; i++) {
        const xmin = hc.bounds[2 * i], xlen = hc.bounds[2 * i + 1], k = i * hc.ksize;
        let r = HALF, g = HALF, b = HALF;
        for (let x = 0; x < xlen; x++) {
          const p = line + (xmin + x) * 4, c = hc.kk[k + x];
          r += data[p] * c; g += data[p + 1] * c; b += data[p + 2] * c;
        }
        const o = (y * size + i) * 4;
        temp[o] = clip8(r); temp[o + 1] = clip8(g); temp[o + 2] = clip8(b);
      }
    }
    const out = new ImageData(size, size);
    for (let j = 0; j < size; j++) {
      const ymin = vc.bounds[2 * j] - first, ylen = vc.bounds[2 * j + 1], k = j * vc.ksize;
      for (let i = 0; i < size; i++) {
        let r = HALF, g = HALF, b = HALF;
        for (let y = 0; y < ylen; y++) {
          const p = ((ymin + y) * size + i) * 4, c = vc.kk[k + y];
          r += temp[p] * c; g += temp[p + 1] * c; b += temp[p + 2] * c;
        }
        const o = (j * size + i) * 4;
        out.data[o] = clip8(r); out.data[o + 1] = clip8(g); out.data[o + 2] = clip8(b); out.data[o + 3] = 255;
      }
    }
    return out;
  }

  // The network's input square (ImageData, size x size) from a decoded photo (ImageBitmap, upright).
  function resizeCrop(bitmap, size, cropPct) {
    const w = bitmap.width, h = bitmap.height;
    const short = Math.max(1, roundHalfEven(size / cropPct)), scale = short / Math.min(w, h);
    const newW = Math.max(size, roundHalfEven(w * scale)), newH = Math.max(size, roundHalfEven(h * scale));
    const left = Math.floor((newW - size) / 2), top = Math.floor((newH - size) / 2);
    const fx = Math.trunc(w / newW / 3) || 1, fy = Math.trunc(h / newH / 3) || 1;
    const canvas = document.createElement("canvas");
    let image, boxW = w, boxH = h;
    if (fx > 1 || fy > 1) {
      // A large photo is copied into a canvas one strip of fy rows at a time (an unscaled copy: the pixels are
      // unchanged), so that a 48-MP photo never needs a full-size canvas or a full-size array.
      canvas.width = w; canvas.height = fy;
      const ctx = canvas.getContext("2d", { willReadFrequently: true });
      image = reduce((y0, bh) => {
        ctx.drawImage(bitmap, 0, y0, w, bh, 0, 0, w, bh);
        return ctx.getImageData(0, 0, w, bh).data;
      }, w, h, fx, fy);
      boxW = w / fx; boxH = h / fy;
    } else {
      canvas.width = w; canvas.height = h;
      const ctx = canvas.getContext("2d", { willReadFrequently: true });
      ctx.drawImage(bitmap, 0, 0);
      image = { data: ctx.getImageData(0, 0, w, h).data, w, h };
    }
    canvas.width = canvas.height = 0;
    return resampleCrop(image, boxW, boxH, newW, newH, left, top, size);
  }

  return { resizeCrop };
})();
