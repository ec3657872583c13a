// The answer rule of src/mpoxscan/deploy/answer.py, mirrored line for line for the phone page (a test runs both on
// the same cases, in Node). The thresholds come from the model file's metadata (`answer_rule`, served by /api/model);
// the measurements are outputs of the model file itself (`quality`, `offtask`).
"use strict";

const MPOXSCAN_ANSWER = (() => {
  const REASONS = {
    too_small: "too small",
    too_dark: "too dark",
    blurred: "blurred",
    compressed: "too compressed",
    not_skin: "not a skin close-up",
    unfamiliar: "unlike the photos the model learned from",
  };
  const QUALITY_MEASURES = ["brightness", "sharpness", "skin_share"];

  function given(v) { return v !== null && v !== undefined; }

  // The reason this photo cannot be judged, or null. `measures`: brightness, sharpness, skin_share, blockiness,
  // offtask.
  function refusal(rule, shortSide, measures) {
    // Written as "not within the limit", so that a measurement that is not a number (NaN) refuses the photo.
    const below = (name, limit) => given(limit) && given(measures[name]) && !(measures[name] >= limit);
    const above = (name, limit) => given(limit) && given(measures[name]) && !(measures[name] <= limit);
    if (rule.min_side && shortSide < rule.min_side) return REASONS.too_small;
    if (below("brightness", rule.min_brightness)) return REASONS.too_dark;
    // A photo under the network's input side is enlarged to it: the blur then found is its size's ("too small").
    if (below("sharpness", rule.min_sharpness)) {
      return rule.input_size && given(shortSide) && shortSide < rule.input_size ? REASONS.too_small : REASONS.blurred;
    }
    if (above("blockiness", rule.max_blockiness)) return REASONS.compressed;
    if (below("skin_share", rule.min_skin_share)) return REASONS.not_skin;
    if (above("offtask", rule.max_offtask)) return REASONS.unfamiliar;
    return null;
  }

  // [answer, reason]: "cannot tell" with its reason, else "positive" when P(positive) >= the threshold.
  function decide(rule, positiveProbability, shortSide, measures) {
    const reason = refusal(rule, shortSide, measures);
    if (reason !== null) return ["cannot tell", reason];
    return [positiveProbability >= rule.screening_threshold ? "positive" : "negative", null];
  }

  // The model's outputs for one photo -> the measures the rule reads.
  function measuresOf(outputs) {
    const m = {};
    if (outputs.quality) QUALITY_MEASURES.forEach((name, i) => { m[name] = outputs.quality.data[i]; });
    if (outputs.offtask) m.offtask = outputs.offtask.data[0];
    return m;
  }

  // deploy/compression.py, mirrored: JPEG's 8 x 8 blocks, measured on the photo as decoded (before any resizing).
  const CROP = 256, BLOCK = 8, LUMA = [0.299, 0.587, 0.114];

  // [left, top, width, height] of the centre square that blockiness reads.
  function centreCropBox(width, height, crop = CROP) {
    const w = Math.min(width, crop), h = Math.min(height, crop);
    return [Math.floor((width - w) / 2), Math.floor((height - h) / 2), w, h];
  }

  // Mean absolute steps -> the largest of the 8 phases' means over the mean of the 7 others.
  function phasePeak(steps) {
    const n = Math.floor(steps.length / BLOCK) * BLOCK;  // at least 2 blocks: blockiness measures no thinner picture
    const phases = new Float64Array(BLOCK);
    for (let i = 0; i < n; i++) phases[i % BLOCK] += steps[i];
    for (let p = 0; p < BLOCK; p++) phases[p] /= n / BLOCK;
    let peak = -Infinity, sum = 0;
    for (let p = 0; p < BLOCK; p++) { sum += phases[p]; if (phases[p] > peak) peak = phases[p]; }
    return peak / ((sum - peak) / (BLOCK - 1) + 0.05);
  }

  // The blockiness of RGBA pixels (width x height, e.g. a canvas's ImageData of the centre square).
  function blockiness(rgba, width, height) {
    if (Math.min(width, height) < 2 * BLOCK + 1) return 0;  // too few steps to compare phases
    const y = new Float64Array(width * height);
    for (let i = 0; i < width * height; i++) {
      y[i] = rgba[4 * i] * LUMA[0] + rgba[4 * i + 1] * LUMA[1] + rgba[4 * i + 2] * LUMA[2];
    }
    const across = new Float64Array(width - 1), down = new Float64Array(height - 1);
    for (let r = 0; r < height; r++) {
      for (let c = 0; c < width; c++) {
        const v = y[r * width + c];
        if (c + 1 < width) across[c] += Math.abs(y[r * width + c + 1] - v) / height;
        if (r + 1 < height) down[r] += Math.abs(y[(r + 1) * width + c] - v) / width;
      }
    }
    return (phasePeak(across) + phasePeak(down)) / 2;
  }

  return { REASONS, QUALITY_MEASURES, refusal, decide, measuresOf, centreCropBox, blockiness };
})();

if (typeof module === "object" && module.exports) module.exports = MPOXSCAN_ANSWER;  // Node, for the tests
