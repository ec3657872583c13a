"""The answer rule: a model's outputs for one photo -> "positive", "negative" or "cannot tell" (with a reason).

This is the one implementation in Python; ``web/static/answer.js`` mirrors it line for line for the phone page, and a
test runs both on the same cases. Every threshold lives in the model file's metadata (``answer_rule``), so that the
file alone decides, the same way in ``mpoxscan predict``, ``/api/screen``, case submission, the dashboard and the page.

The measurements the rule reads are outputs of the model file itself (``quality``: brightness, sharpness and skin
share of the network's input; ``offtask``: how unlike the training photos the photo is), so that the phone and the
server measure with the same arithmetic. One is not: ``blockiness`` (deploy/compression.py) is measured on the
decoded photo before resizing, where JPEG's blocks still show; the page mirrors its arithmetic.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np

ANSWERS = ("positive", "negative", "cannot tell")


def screened_positive(answer: str) -> bool | None:
    """An answer as JSON's yes / no: True, False, and None (null) for "cannot tell", which False would misread as a
    negative screening (predict --json, /api/screen, the webhook, explain's records)."""
    return None if answer == "cannot tell" else answer == "positive"

#: Reasons for "cannot tell", in the order they are checked: the first that applies is given.
REASONS = {
    "too_small": "too small",
    "too_dark": "too dark",
    "blurred": "blurred",
    "compressed": "too compressed",
    "not_skin": "not a skin close-up",
    "unfamiliar": "unlike the photos the model learned from",
}

#: What the person can do about each reason (the page and the CLI show it).
ADVICE = {
    "too small": "Come closer, or use the camera rather than a thumbnail.",
    "too dark": "Use daylight or the flash.",
    "blurred": "Hold the phone still and tap the lesion to focus.",
    "too compressed": "Use the photo from the camera itself, not a copy saved from a chat or a web page.",
    "not a skin close-up": "Fill the frame with the lesion and a little skin around it.",
    "unlike the photos the model learned from": "Fill the frame with the lesion and a little skin around it, "
                                                "in daylight and in focus.",
}

#: Names of the columns of the model's ``quality`` output, in order.
QUALITY_MEASURES = ("brightness", "sharpness", "skin_share")


@dataclass(frozen=True)
class AnswerRule:
    """Thresholds of the answer rule; ``None`` turns a check off. Stored in the model's metadata as ``answer_rule``."""

    screening_threshold: float
    positive_class: str
    min_side: int = 0  # the photo's short side, in pixels, before any resizing
    min_brightness: float | None = None  # mean luma of the network's input, 0..1
    min_sharpness: float | None = None  # variance of the Laplacian of the input's luma (0..255 scale)
    min_skin_share: float | None = None  # share of the input's pixels of skin colour
    max_blockiness: float | None = None  # JPEG's 8 x 8 blocks, at the photo's own resolution (deploy/compression.py)
    max_offtask: float | None = None  # the model's ``offtask`` score: larger is more unlike its training photos
    # The network's input side (0: unknown). A photo whose short side is under it is enlarged to it, and the blur
    # then found is its size's: it is refused as "too small" (come closer), not "blurred" (hold still).
    input_size: int = 0
    notes: dict = field(default_factory=dict)  # how each threshold was set (not read by the rule)

    @classmethod
    def from_meta(cls, meta: dict) -> "AnswerRule":
        """The rule of a model file's metadata; files exported before the rule existed get screening only."""
        rule = dict(meta.get("answer_rule") or {})
        rule.setdefault("screening_threshold", meta["screening_threshold"])
        rule.setdefault("positive_class", meta.get("positive_class", meta["classes"][0]))
        # The input side is the file's own (its preprocessing), whatever the rule was written with.
        rule["input_size"] = rule.get("input_size") or (meta.get("preprocessing") or {}).get("input_size", 0)
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in rule.items() if k in known})

    def as_dict(self) -> dict:
        return asdict(self)

    def refusal(self, short_side: int | None, measures: dict[str, float]) -> str | None:
        """The reason this photo cannot be judged, or None. ``measures``: brightness, sharpness, skin_share, offtask
        blockiness (a missing measure is not checked, nor the size when ``short_side`` is None)."""
        # Written as "not within the limit", so that a measurement that is not a number (NaN) refuses the photo.
        def below(name: str, limit: float | None) -> bool:
            return limit is not None and name in measures and not measures[name] >= limit

        def above(name: str, limit: float | None) -> bool:
            return limit is not None and name in measures and not measures[name] <= limit

        if self.min_side and short_side is not None and short_side < self.min_side:
            return REASONS["too_small"]
        if below("brightness", self.min_brightness):
            return REASONS["too_dark"]
        if below("sharpness", self.min_sharpness):
            enlarged = self.input_size and short_side is not None and short_side < self.input_size
            return REASONS["too_small"] if enlarged else REASONS["blurred"]
        if above("blockiness", self.max_blockiness):
            return REASONS["compressed"]
        if below("skin_share", self.min_skin_share):
            return REASONS["not_skin"]
        if above("offtask", self.max_offtask):
            return REASONS["unfamiliar"]
        return None

    def decide(self, positive_probability: float, short_side: int | None,
               measures: dict[str, float]) -> tuple[str, str | None]:
        """(answer, reason): "cannot tell" with its reason, else "positive" when P(positive) >= the threshold."""
        reason = self.refusal(short_side, measures)
        if reason is not None:
            return "cannot tell", reason
        return ("positive" if positive_probability >= self.screening_threshold else "negative"), None


#: The share of real, in-distribution photos each check may refuse (its conformal level; see :func:`fit_rule`).
ALPHA = {"brightness": 0.005, "sharpness": 0.005, "skin_share": 0.005, "blockiness": 0.005, "offtask": 0.01}
#: Photos whose short side is under this are refused (curate rejects such images from training too).
MIN_SIDE = 64


def conformal_limit(values: np.ndarray, alpha: float, lower: bool) -> float | None:
    """The threshold that refuses at most ``alpha`` of new photos exchangeable with ``values`` (split-conformal:
    the k-th smallest value, k = floor((n + 1) alpha), for a lower limit; mirrored for an upper one); None when
    there are too few values to promise that (the check is then off)."""
    v = np.sort(np.asarray(values, float))
    k = int(np.floor((len(v) + 1) * alpha))
    if k < 1:
        return None
    return float(v[k - 1]) if lower else float(v[len(v) - k])


def fit_rule(rule: AnswerRule, quality: np.ndarray | None, offtask: np.ndarray | None,
             blockiness: np.ndarray | None = None, alpha: dict[str, float] = ALPHA,
             min_side: int = MIN_SIDE) -> AnswerRule:
    """Set the thresholds of ``rule`` from real in-distribution photos that play no other part in them:
    ``quality`` (n, 3) and ``blockiness`` (n,; NaN: not measured) of the reference photos, ``offtask`` (m,) of photos the off-task
    subspace was not fitted on. Each check refuses at most its ``alpha`` of such photos."""
    notes: dict = {"alpha": {k: alpha[k] for k in alpha}}
    limits: dict = {"min_side": min_side}
    if quality is not None and len(quality):
        for j, name in enumerate(QUALITY_MEASURES):
            limits[f"min_{name}"] = conformal_limit(quality[:, j], alpha[name], lower=True)
        notes["quality_photos"] = int(len(quality))
    if blockiness is not None:
        blockiness = np.asarray(blockiness, float)
        blockiness = blockiness[~np.isnan(blockiness)]  # photos that screening would not measure either
        limits["max_blockiness"] = conformal_limit(blockiness, alpha["blockiness"], lower=False)
        notes["blockiness_photos"] = int(len(blockiness))
    if offtask is not None and len(offtask):
        limits["max_offtask"] = conformal_limit(offtask, alpha["offtask"], lower=False)
        notes["offtask_photos"] = int(len(offtask))
    return replace(rule, **limits, notes=notes)
