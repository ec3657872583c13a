// The hot loops of the phone page's exact resize (static/resize.js), in WebAssembly with 128-bit SIMD: Pillow's
// reduce (whole-block means) and its separable bicubic convolution, with Pillow's own integer arithmetic, so that the
// result is the same to the last bit as Preprocessing.resize_crop in Python (the tests compare every pixel).
// resize.js keeps the arithmetic's plan (coefficients, spans, which rows are read) and a plain-JavaScript copy of
// these loops, which browsers without WebAssembly SIMD use; this file only runs them 4 channels at a time.
// Hand-written because no library reproduces Pillow's rounding (see resize.js). Built by `make wasm` with the `zig`
// of PyPI's `ziglang` (its clang): the committed static/resize.wasm is checked to be this file's build by the tests.
//
// Pixels are 4 bytes (RGBA, or BGRX from a VideoFrame: `swap` trades the first and third bytes of what is written).
#include <stdint.h>
#include <wasm_simd128.h>

#define EXPORT(name) __attribute__((export_name(#name)))
#define PRECISION_BITS 22

// Pillow's multiplier for the mean of n values, (sum + n / 2) * m >> 24, with m computed in single precision as
// ImagingReduce's division_UINT32 does.
static uint32_t multiplier(uint32_t n) { return (uint32_t)(4294967296.0f / (float)(256u * n)); }

// Four 8-bit values widened to a vector of 32-bit ones.
static inline v128_t load_pixel(const uint8_t *p) {
  return wasm_u32x4_extend_low_u16x8(wasm_u16x8_extend_low_u8x16(wasm_v128_load32_zero(p)));
}

// A vector of four 32-bit values written as one pixel: each clipped to 0..255, the fourth (alpha) set to 255.
static inline void store_pixel(uint8_t *o, v128_t v, int swap) {
  v128_t narrow = wasm_i16x8_narrow_i32x4(v, v);
  v128_t bytes = wasm_u8x16_narrow_i16x8(narrow, narrow);
  wasm_v128_store32_lane(o, bytes, 0);
  if (swap) { uint8_t t = o[0]; o[0] = o[2]; o[2] = t; }
  o[3] = 255;
}

// Pillow's reduce of one band of whole block rows: `strip` holds `rows` rows of `sw` pixels, cut into block rows of
// fy rows (the last one possibly shorter, at the photo's bottom edge) and blocks of fx columns (`full` whole blocks,
// then one of `last` columns when last > 0). Each block's mean goes to `out`, block row after block row (`ow`
// pixels each). `col` is room for sw * 4 sums: each block row's columns are summed first (one long loop), then the
// columns of each block. 16-bit column sums: exact for fy <= 257 (resize.js takes its own loops beyond).
EXPORT(reduce_band)
void reduce_band(const uint8_t *strip, int sw, int rows, int fx, int fy, int full, int last, int swap,
                 uint16_t *col, uint8_t *out) {
  const int n = sw * 4, n16 = n & ~15, ow = full + (last > 0);
  for (int top = 0; top < rows; top += fy) {
    const int here = rows - top < fy ? rows - top : fy;
    for (int y = 0; y < here; y++) {
      const uint8_t *p = strip + (long)(top + y) * n;
      int i = 0;
      if (y == 0) {
        for (; i < n16; i += 16) {
          v128_t v = wasm_v128_load(p + i);
          wasm_v128_store(col + i, wasm_u16x8_extend_low_u8x16(v));
          wasm_v128_store(col + i + 8, wasm_u16x8_extend_high_u8x16(v));
        }
        for (; i < n; i++) col[i] = p[i];
      } else {
        for (; i < n16; i += 16) {
          v128_t v = wasm_v128_load(p + i);
          wasm_v128_store(col + i, wasm_i16x8_add(wasm_v128_load(col + i), wasm_u16x8_extend_low_u8x16(v)));
          wasm_v128_store(col + i + 8,
                          wasm_i16x8_add(wasm_v128_load(col + i + 8), wasm_u16x8_extend_high_u8x16(v)));
        }
        for (; i < n; i++) col[i] += p[i];
      }
    }
    const uint32_t nfull = (uint32_t)(fx * here), nlast = (uint32_t)(last * here);
    const v128_t mfull = wasm_i32x4_splat((int32_t)multiplier(nfull)), afull = wasm_i32x4_splat((int32_t)(nfull / 2));
    const v128_t mlast = last ? wasm_i32x4_splat((int32_t)multiplier(nlast)) : mfull;
    const v128_t alast = wasm_i32x4_splat((int32_t)(nlast / 2));
    const uint16_t *c = col;
    for (int bx = 0; bx < ow; bx++) {
      const int w = bx < full ? fx : last;
      v128_t s = bx < full ? afull : alast;
      for (int k = 0; k < w; k++, c += 4) s = wasm_i32x4_add(s, wasm_u32x4_load16x4(c));
      // (sum + n / 2) * m stays below 2^32 (Pillow computes it in 32 bits too), so the low half of the product is it
      store_pixel(out, wasm_u32x4_shr(wasm_i32x4_mul(s, bx < full ? mfull : mlast), 24), swap);
      out += 4;
    }
  }
}

// The horizontal pass: `rows` rows of `ww` pixels (`data`), each resampled to `size` outputs; output i reads
// bounds[2i + 1] pixels from column bounds[2i] - x0 with the fixed-point weights kk[i * ksize ...]. `swap`: the
// pixels were BGRX (set when this is the second pass).
EXPORT(resample_horizontal)
void resample_horizontal(const uint8_t *data, int ww, int rows, const int32_t *kk, const int32_t *bounds, int ksize,
                         int size, int x0, int swap, uint8_t *out) {
  const v128_t half = wasm_i32x4_splat(1 << (PRECISION_BITS - 1));
  for (int y = 0; y < rows; y++) {
    const uint8_t *line = data + (long)y * ww * 4;
    for (int i = 0; i < size; i++) {
      const uint8_t *p = line + (bounds[2 * i] - x0) * 4;
      const int32_t *k = kk + i * ksize;
      v128_t acc = half;
      for (int x = 0, n = bounds[2 * i + 1]; x < n; x++, p += 4)
        acc = wasm_i32x4_add(acc, wasm_i32x4_mul(load_pixel(p), wasm_i32x4_splat(k[x])));
      store_pixel(out, wasm_i32x4_shr(acc, PRECISION_BITS), swap);
      out += 4;
    }
  }
}

// The vertical pass: `data` holds rows of `width` pixels, the first being input row `first`; output row j (of
// `rows`) reads bounds[2j + 1] rows from row bounds[2j] - first. `swap`: the pixels were BGRX (set when this is the
// second pass).
EXPORT(resample_vertical)
void resample_vertical(const uint8_t *data, int width, int rows, const int32_t *kk, const int32_t *bounds, int ksize,
                       int first, int swap, uint8_t *out) {
  const v128_t half = wasm_i32x4_splat(1 << (PRECISION_BITS - 1));
  const long stride = (long)width * 4;
  for (int j = 0; j < rows; j++) {
    const uint8_t *top = data + (bounds[2 * j] - first) * stride;
    const int32_t *k = kk + j * ksize;
    const int n = bounds[2 * j + 1];
    for (int i = 0; i < width; i++) {
      const uint8_t *p = top + i * 4;
      v128_t acc = half;
      for (int y = 0; y < n; y++, p += stride)
        acc = wasm_i32x4_add(acc, wasm_i32x4_mul(load_pixel(p), wasm_i32x4_splat(k[y])));
      store_pixel(out, wasm_i32x4_shr(acc, PRECISION_BITS), swap);
      out += 4;
    }
  }
}
