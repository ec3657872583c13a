// The answer rule of src/mpoxscan/deploy/answer.py, mirrored line for line for the phone page (a test runs both on
// the same cases, in Node). The thresholds come from the model file's metadata (`answer_rule`, served by /api/model);
// the measurements are outputs of the model file itself (`quality`, `offtask`).
"use strict";

const MPOXSCAN_ANSWER = (() => {
  const REASONS = {
    too_small: "too small",
    too_dark: "too dark",
    blurred: "blurred",
    not_skin: "not a skin close-up",
    unfamiliar: "unlike the photos the model learned from",
  };
  const QUALITY_MEASURES = ["brightness", "sharpness", "skin_share"];

  function given(v) { return v !== null && v !== undefined; }

  // The reason this photo cannot be judged, or null. `measures`: brightness, sharpness, skin_share, offtask.
  function refusal(rule, shortSide, measures) {
    const below = (name, limit) => given(limit) && given(measures[name]) && measures[name] < limit;
    const above = (name, limit) => given(limit) && given(measures[name]) && measures[name] > limit;
    if (rule.min_side && shortSide < rule.min_side) return REASONS.too_small;
    if (below("brightness", rule.min_brightness)) return REASONS.too_dark;
    if (below("sharpness", rule.min_sharpness)) return REASONS.blurred;
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

  return { REASONS, QUALITY_MEASURES, refusal, decide, measuresOf };
})();

if (typeof module === "object" && module.exports) module.exports = MPOXSCAN_ANSWER;  // Node, for the tests
