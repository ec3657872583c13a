// The network's input, cut on the phone exactly as mpoxscan.preprocess.Preprocessing.resize_crop cuts it in Python:
// the short side resized to input_size / crop_pct with Pillow's `resize(..., BICUBIC, reducing_gap=3.0)`, then the
// centre square. Written by hand because a canvas resizes with the browser's own filter (measured: 3 top-class flips
// in 302 real photos, probabilities up to 0.33 apart) and no JavaScript library reproduces Pillow's arithmetic.
// Pillow's algorithm, reproduced: (1) when the photo is over 3x the target, `reduce` averages whole factor x factor
// blocks (partial blocks at the edges average what they hold), rounding as Pillow's integer code does; (2) a
// separable bicubic convolution (a = -0.5; support widened by the scale when shrinking; weights normalised, then
// fixed point with 22 fractional bits), horizontal pass first (vertical first for a tall photo, as Pillow 13 does:
// verticalFirst), each pass rounded to 8 bits.
// The loops run in WebAssembly with SIMD (resize.wasm, built from ../wasm/resize.c: four channels at a time) where the
// browser has it, and in the JavaScript below otherwise: the same arithmetic, so the same result to the last bit.
"use strict";

const MPOXSCAN_RESIZE = (() => {
  const PRECISION_BITS = 22, ONE = 1 << PRECISION_BITS, HALF = 1 << (PRECISION_BITS - 1);
  const SUPPORT = 2.0;  // bicubic
  const BAND_PIXELS = 1 << 18;  // pixels read out of the photo at a time (1 MB): no full-size copy of a 48-MP photo
  // Read through a VideoFrame, a band is one copy request (a GPU-held photo may be read back once per request): fewer,
  // larger bands (4 MB, into one buffer used again: measured on a 12-MP photo, 7 ms for what 16-MB bands each in a
  // new buffer read in 31), still no full-size copy of a 48-MP photo.
  const FRAME_BAND_PIXELS = 1 << 20;

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
  // Pillow's precompute_coeffs to the bit: the box's bounds are single precision (its C signature takes floats, so
  // a reduced photo's box, e.g. 4000 / 3, is rounded to float), their difference too, and the filter is evaluated at
  // the distance times 1 / filterscale, not divided by it (each changes a weight's last bit, and now and then a pixel:
  // found on a 2400 x 4000 photo).
  function coefficients(inSize, in0, in1, outSize, from, count) {
    in0 = Math.fround(in0);
    const scale = Math.fround(Math.fround(in1) - in0) / outSize, filterscale = Math.max(scale, 1);
    const support = SUPPORT * filterscale, ss = 1 / filterscale, ksize = Math.ceil(support) * 2 + 1;
    const kk = new Int32Array(count * ksize), bounds = new Int32Array(count * 2), w = new Float64Array(ksize);
    for (let i = 0; i < count; i++) {
      const center = in0 + (from + i + 0.5) * scale;
      let xmin = Math.trunc(center - support + 0.5), xmax = Math.trunc(center + support + 0.5);
      if (xmin < 0) xmin = 0;
      if (xmax > inSize) xmax = inSize;
      xmax -= xmin;
      let ww = 0;
      for (let x = 0; x < xmax; x++) { w[x] = bicubic((x + xmin - center + 0.5) * ss); ww += w[x]; }
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

  // The input positions [first, last) that outputs [from, from + count) read (the union of their supports).
  function span(c, count) {
    let first = Infinity, last = 0;
    for (let i = 0; i < count; i++) {
      first = Math.min(first, c.bounds[2 * i]); last = Math.max(last, c.bounds[2 * i] + c.bounds[2 * i + 1]);
    }
    return [first, last];
  }

  // The photo's columns that blocks [bx0, bx1) cover ([sx0, sx0 + sw): whole blocks, then a partial one of ``last``
  // columns at the right edge) and the rows read at a time (whole block rows, about source.band pixels): the plan of
  // both reduce loops, the JavaScript and the WebAssembly ones.
  function blockPlan(source, w, fx, fy, bx0, bx1) {
    const sx0 = bx0 * fx, sw = Math.min(w, bx1 * fx) - sx0, full = Math.floor(sw / fx);
    return { sx0, sw, full, last: sw - full * fx, band: fy * Math.max(1, Math.floor(source.band / (sw * fy))) };
  }

  // Pillow's reduce (fx x fy blocks averaged, partial blocks at the image's edges averaging what they hold, each
  // mean rounded as ImagingReduce does), computed only for the blocks [bx0, bx1) x [by0, by1) that the resampling
  // reads. The photo's pixels are read a band of whole block rows at a time by read(x, y, w, h): reading them out of
  // the decoded photo is most of the cost, so a few large reads of only the columns needed beat one per block row
  // and a copy of the whole photo (measured: benchmarks/results/web/web.md). ``source.swap``: the pixels come as
  // BGRX (a VideoFrame's own order), so the first and third bytes trade places on the way out.
  async function reduce(source, w, h, fx, fy, bx0, bx1, by0, by1, plain) {
    const read = source.read, swap = source.swap;
    const ow = bx1 - bx0, out = new Uint8ClampedArray(ow * (by1 - by0) * 4);
    const { sx0, sw, full, last, band } = blockPlan(source, w, fx, fy, bx0, bx1);
    // Red and blue summed together in one number's two 16-bit halves (a pixel read as 32 bits, RGBA little-endian:
    // v & 0xff00ff holds R and B apart), green alone: two additions per pixel, not three. Exact while a block holds
    // at most 257 pixels (257 x 255 < 65536); larger blocks (a photo over 60 MP) take the plain three.
    const packed = fx * fy <= 257 && !plain;
    const rb = new Uint32Array(ow), g = new Uint32Array(ow), b = packed ? null : new Uint32Array(ow);
    // packed: each column of a block row summed first (one long, simple loop over the pixels instead of short loops
    // over each block's few pixels), then the columns of each block. Measured with the frame's reused 4-MB buffer, on
    // one 12-MP photo: reduce 62 to 90 ms before, 42 to 45 ms after (the two changes were not timed apart).
    const colRB = packed ? new Uint32Array(sw) : null, colG = packed ? new Uint32Array(sw) : null;
    for (let sy = by0 * fy, end = Math.min(h, by1 * fy); sy < end; sy += band) {
      const bh = Math.min(band, end - sy), bytes = await read(sx0, sy, sw, bh);
      const strip = new Uint32Array(bytes.buffer, bytes.byteOffset, sw * bh);
      for (let top = 0; top < bh; top += fy) {
        const rowsHere = Math.min(fy, bh - top);
        rb.fill(0); g.fill(0); if (b) b.fill(0);
        if (packed) {
          colRB.fill(0); colG.fill(0);
          for (let y = top; y < top + rowsHere; y++) {
            for (let x = 0, p = y * sw; x < sw; x++, p++) {
              const v = strip[p]; colRB[x] += v & 0xff00ff; colG[x] += (v >>> 8) & 255;
            }
          }
          for (let bx = 0, x = 0; bx < ow; bx++) {
            let s1 = 0, s2 = 0;
            for (const stop = x + (bx < full ? fx : last); x < stop; x++) { s1 += colRB[x]; s2 += colG[x]; }
            rb[bx] = s1; g[bx] = s2;
          }
        } else {
          for (let y = top; y < top + rowsHere; y++) {
            let p = y * sw;
            for (let bx = 0; bx < ow; bx++) {
              const n = bx < full ? fx : last;
              let s1 = 0, s2 = 0, s3 = 0;
              for (let k = 0; k < n; k++) { const v = strip[p++]; s1 += v & 255; s2 += (v >>> 8) & 255; s3 += (v >>> 16) & 255; }
              rb[bx] += s1; g[bx] += s2; b[bx] += s3;
            }
          }
        }
        const row = (sy + top) / fy - by0;
        for (let bx = 0; bx < ow; bx++) {
          const n = (bx < full ? fx : last) * rowsHere, m = multiplier(n), amend = Math.floor(n / 2);
          const o = (row * ow + bx) * 4;
          const first = packed ? rb[bx] & 0xffff : rb[bx], third = packed ? rb[bx] >>> 16 : b[bx];
          const red = swap ? third : first, blue = swap ? first : third;
          out[o] = Math.floor(((red + amend) * m) / 16777216);
          out[o + 1] = Math.floor(((g[bx] + amend) * m) / 16777216);
          out[o + 2] = Math.floor(((blue + amend) * m) / 16777216);
          out[o + 3] = 255;
        }
      }
    }
    return out;
  }

  // One bicubic pass over an RGBA window (``src``, ``srcW`` pixels a row), written as RGBA into ``out``:
  // horizontal (each of ``rows`` rows, from row ``row0``, resampled to c's outputs, columns counted from ``x0``) or
  // vertical (each output row of c from the window's rows counted from ``y0``, every column). ``swap``: the window is
  // BGRX, so the first and third bytes trade places on the way out.
  function passHorizontal(src, srcW, row0, rows, x0, c, count, swap, out) {
    const R = swap ? 2 : 0, B = 2 - R;
    for (let y = 0; y < rows; y++) {
      const line = (row0 + y) * srcW * 4;
      for (let i = 0; i < count; i++) {
        const xmin = c.bounds[2 * i] - x0, xlen = c.bounds[2 * i + 1], k = i * c.ksize;
        let r = HALF, g = HALF, b = HALF;
        for (let x = 0; x < xlen; x++) {
          const p = line + (xmin + x) * 4, w = c.kk[k + x];
          r += src[p + R] * w; g += src[p + 1] * w; b += src[p + B] * w;
        }
        const o = (y * count + i) * 4;
        out[o] = clip8(r); out[o + 1] = clip8(g); out[o + 2] = clip8(b); out[o + 3] = 255;
      }
    }
  }

  function passVertical(src, srcW, y0, c, count, swap, out) {
    const R = swap ? 2 : 0, B = 2 - R;
    for (let j = 0; j < count; j++) {
      const ymin = c.bounds[2 * j] - y0, ylen = c.bounds[2 * j + 1], k = j * c.ksize;
      for (let i = 0; i < srcW; i++) {
        let r = HALF, g = HALF, b = HALF;
        for (let y = 0; y < ylen; y++) {
          const p = ((ymin + y) * srcW + i) * 4, w = c.kk[k + y];
          r += src[p + R] * w; g += src[p + 1] * w; b += src[p + B] * w;
        }
        const o = (j * srcW + i) * 4;
        out[o] = clip8(r); out[o + 1] = clip8(g); out[o + 2] = clip8(b); out[o + 3] = 255;
      }
    }
  }

  // Pillow 13 resamples vertically first when the height shrinks by more than twice as many pixels as the width
  // (measured against Pillow 13.0 on 900 random sizes and boxes: this rule, on the resampled image's own size, gave
  // its order every time; earlier versions always went horizontally first, so pyproject.toml asks for Pillow 13).
  // Each pass rounds to 8 bits, so the order changes pixels by a level, and a tall photo (a screenshot) takes it.
  function verticalFirst(inW, inH, outW, outH) { return inH > outH && inH - outH > 2 * (inW - outW); }

  // The size x size square at (left, top) of a resize to outW x outH, by the coefficients hc and vc, of an RGBA
  // window of the input: its columns [x0, x0 + ww) and rows [y0, ...); ``swap``: the window is BGRX; ``vFirst``:
  // the vertical pass first (verticalFirst).
  function resampleCrop(data, x0, ww, y0, hc, vc, size, swap, vFirst) {
    const out = new ImageData(size, size);
    if (vFirst) {
      const temp = new Uint8ClampedArray(size * ww * 4);
      passVertical(data, ww, y0, vc, size, swap, temp);
      passHorizontal(temp, ww, 0, size, x0, hc, size, false, out.data);
    } else {
      const [first, last] = span(vc, size);  // the input rows the vertical pass reads
      const temp = new Uint8ClampedArray((last - first) * size * 4);
      passHorizontal(data, ww, first - y0, last - first, x0, hc, size, swap, temp);
      passVertical(temp, size, first, vc, size, false, out.data);
    }
    return out;
  }

  // The WebAssembly kernels (resize.wasm), compiled once, on the first photo; null where the browser has no
  // WebAssembly with SIMD or the file cannot be had: the JavaScript loops above then do the work.
  let kernels = null;
  function loadKernels() {
    if (!kernels) {
      kernels = (async () => {
        if (typeof WebAssembly !== "object") return null;
        // the versioned address the server gave the page (messages.js), else the plain one (a page served as is)
        const files = typeof MPOXSCAN_FILES === "object" ? MPOXSCAN_FILES : {};
        const response = await fetch(files.resizeWasm || "/static/resize.wasm");
        if (!response.ok) return null;
        return await WebAssembly.compile(await response.arrayBuffer());  // a browser without SIMD refuses it here
      })().catch(() => null);
    }
    return kernels;
  }

  // resizeCrop's work through the kernels, in a memory of its own (two photos resized at the same time never share
  // an instance), laid out once: the coefficients, the band of photo rows being read (a VideoFrame copies straight
  // into it), the block means, the first pass's rows and the square. The last instance is kept for the next photo
  // (its memory already grown: a new one's 12 MB for a 12-MP photo took a few ms to allocate), unless it grew past
  // KEEP_BYTES (a 48-MP panorama's), which would then stay allocated for nothing.
  const KEEP_BYTES = 64 << 20;
  let idle = null;
  async function resizeWasm(module, source, ...rest) {
    const instance = idle || await WebAssembly.instantiate(module);
    idle = null;
    try {
      return await resizeIn(instance.exports, source, ...rest);
    } finally {
      if (instance.exports.memory.buffer.byteLength <= KEEP_BYTES) idle = instance;
    }
  }

  async function resizeIn(exports, source, w, h, fx, fy, reduced, hc, vc, [x0, x1], [y0, y1], size, vFirst) {
    const ww = x1 - x0, [first, last] = span(vc, size);
    let top = exports.__heap_base.value;
    const place = (bytes) => { const at = (top + 15) & ~15; top = at + bytes; return at; };
    const hk = place(hc.kk.byteLength), hb = place(hc.bounds.byteLength);
    const vk = place(vc.kk.byteLength), vb = place(vc.bounds.byteLength);
    const { sx0, sw, full, last: rest, band } = reduced ? blockPlan(source, w, fx, fy, x0, x1)
      : { sx0: 0, sw: ww, full: 0, last: 0, band: y1 - y0 };
    const col = reduced ? place(sw * 8) : 0;
    const strip = place(sw * band * 4), data = reduced ? place(ww * (y1 - y0) * 4) : strip;
    const temp = place((vFirst ? ww : last - first) * size * 4), out = place(size * size * 4);
    const memory = exports.memory, more = Math.ceil((top - memory.buffer.byteLength) / 65536);
    if (more > 0) memory.grow(more);
    const bytes = new Uint8Array(memory.buffer);  // taken after growing (growing detaches the old buffer)
    new Int32Array(memory.buffer, hk, hc.kk.length).set(hc.kk);
    new Int32Array(memory.buffer, hb, hc.bounds.length).set(hc.bounds);
    new Int32Array(memory.buffer, vk, vc.kk.length).set(vc.kk);
    new Int32Array(memory.buffer, vb, vc.bounds.length).set(vc.bounds);
    if (reduced) {
      for (let sy = y0 * fy, end = Math.min(h, y1 * fy); sy < end; sy += band) {
        const bh = Math.min(band, end - sy);
        await source.read(sx0, sy, sw, bh, bytes.subarray(strip, strip + sw * bh * 4));
        exports.reduce_band(strip, sw, bh, fx, fy, full, rest, source.swap ? 1 : 0, col,
                            data + ((sy / fy) - y0) * ww * 4);
      }
    } else {
      await source.read(x0, y0, ww, y1 - y0, bytes.subarray(strip, strip + ww * (y1 - y0) * 4));
    }
    const swap = source.swap && !reduced ? 1 : 0;  // the reduced photo is RGBA whatever the source's order
    if (vFirst) {
      exports.resample_vertical(data, ww, size, vk, vb, vc.ksize, y0, 0, temp);
      exports.resample_horizontal(temp, ww, size, hk, hb, hc.ksize, size, x0, swap, out);
    } else {
      exports.resample_horizontal(data + (first - y0) * ww * 4, ww, last - first, hk, hb, hc.ksize, size, x0, 0, temp);
      exports.resample_vertical(temp, size, size, vk, vb, vc.ksize, first, swap, out);
    }
    return new ImageData(new Uint8ClampedArray(bytes.slice(out, out + size * size * 4).buffer), size, size);
  }

  // Where the photo's pixels are read from. A canvas (drawImage of a band, then getImageData) works everywhere but
  // copies twice and reorders the bytes; a VideoFrame of the photo copies its pixels out once, in its own byte order
  // (measured on a 12-MP photo: benchmarks/results/web/resize.md). The frame is used only when its pixels are opaque
  // and 8-bit interleaved (RGBX or BGRX) and already sRGB: a photo with transparency keeps the canvas, whose
  // un-premultiplied pixels are what the tests compare with Pillow, and so does a browser without WebCodecs. So does
  // a photo with another colour profile (a phone's Display P3): a frame's copy holds its pixels as stored, where the
  // canvas converts them to sRGB as Pillow does (found by a hostile test: up to 19 levels apart otherwise).
  function canvasSource(bitmap) {
    const canvas = document.createElement("canvas");
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    // An unscaled copy of part of the photo into the canvas (the pixels unchanged), read back.
    const read = (x, y, rw, rh, into) => {
      if (canvas.width < rw || canvas.height < rh) { canvas.width = rw; canvas.height = rh; }
      ctx.clearRect(0, 0, rw, rh);  // a photo with transparency is not blended with the last band
      ctx.drawImage(bitmap, x, y, rw, rh, 0, 0, rw, rh);
      const data = ctx.getImageData(0, 0, rw, rh).data;
      if (!into) return data;
      into.set(data);
      return into;
    };
    return { read, swap: false, band: BAND_PIXELS, kind: "canvas", close: () => { canvas.width = canvas.height = 0; } };
  }

  function frameSource(bitmap) {
    if (typeof VideoFrame !== "function") return null;
    let frame;
    try { frame = new VideoFrame(bitmap, { timestamp: 0 }); } catch (err) { return null; }
    // A photo turned by its EXIF orientation keeps its stored pixels in the frame, with the turn beside them
    // (rotation, flip): those, like any frame whose pixels are not the bitmap's as they stand, take the canvas.
    const upright = !frame.rotation && !frame.flip && frame.codedWidth === bitmap.width
      && frame.codedHeight === bitmap.height && !frame.visibleRect.x && !frame.visibleRect.y;
    const cs = frame.colorSpace || {}, srgb = cs.primaries === "bt709" && cs.transfer === "iec61966-2-1";
    if (!upright || !srgb || (frame.format !== "RGBX" && frame.format !== "BGRX")) { frame.close(); return null; }
    let buffer = new Uint8ClampedArray(0);  // one buffer for every band (each is used up before the next is read)
    const read = async (x, y, rw, rh, into) => {
      if (!into && buffer.length < rw * rh * 4) buffer = new Uint8ClampedArray(rw * rh * 4);
      const out = into || buffer.subarray(0, rw * rh * 4);
      await frame.copyTo(out, { rect: { x, y, width: rw, height: rh }, layout: [{ offset: 0, stride: rw * 4 }] });
      return out;
    };
    return { read, swap: frame.format === "BGRX", band: FRAME_BAND_PIXELS, kind: "frame", close: () => frame.close() };
  }

  // The network's input square (ImageData, size x size) from a decoded photo (ImageBitmap, upright). Only the part
  // of the photo that the centre square's filters reach is read and reduced (a 4:3 photo's outer eighths are not).
  // ``script``: the JavaScript loops even where the WebAssembly ones could run; ``plain``: those loops' three
  // separate sums whatever the blocks' size; ``canvas``: read through a canvas even where a VideoFrame could be used
  // (the tests check that every way gives Pillow's result).
  async function resizeCrop(bitmap, size, cropPct, { plain = false, canvas = false, script = false } = {}) {
    const w = bitmap.width, h = bitmap.height;
    const short = Math.max(1, roundHalfEven(size / cropPct)), scale = short / Math.min(w, h);
    const newW = Math.max(size, roundHalfEven(w * scale)), newH = Math.max(size, roundHalfEven(h * scale));
    const left = Math.floor((newW - size) / 2), top = Math.floor((newH - size) / 2);
    const fx = Math.trunc(w / newW / 3) || 1, fy = Math.trunc(h / newH / 3) || 1;
    // The resampling's input: the reduced photo (its box the photo's size over the factors) or the photo itself.
    const reduced = fx > 1 || fy > 1, iw = Math.ceil(w / fx), ih = Math.ceil(h / fy);
    const hc = coefficients(iw, 0, reduced ? w / fx : w, newW, left, size);
    const vc = coefficients(ih, 0, reduced ? h / fy : h, newH, top, size);
    const [x0, x1] = span(hc, size), [y0, y1] = span(vc, size), vFirst = verticalFirst(iw, ih, newW, newH);
    // the kernels' column sums are 16-bit: exact for blocks of up to 257 rows (a photo under 197,000 pixels high)
    const module = script || plain || fy > 257 ? null : await loadKernels();
    const source = (!canvas && frameSource(bitmap)) || canvasSource(bitmap);
    try {
      let square;
      if (module) {
        square = await resizeWasm(module, source, w, h, fx, fy, reduced, hc, vc, [x0, x1], [y0, y1], size, vFirst);
      } else {
        const data = reduced ? await reduce(source, w, h, fx, fy, x0, x1, y0, y1, plain)
          : await source.read(x0, y0, x1 - x0, y1 - y0);
        // the reduced photo is RGBA whatever the source's order (reduce trades the bytes back)
        square = resampleCrop(data, x0, x1 - x0, y0, hc, vc, size, source.swap && !reduced, vFirst);
      }
      lastSource = source.kind;
      lastKernel = module ? "wasm" : "script";
      return square;
    } finally {
      source.close();
    }
  }

  // which way the last photo was read ("frame" or "canvas") and resized ("wasm" or "script"): for the tests and the
  // benchmarks
  let lastSource = null, lastKernel = null;
  return { resizeCrop, prepare: loadKernels, lastSource: () => lastSource, lastKernel: () => lastKernel };
})();
