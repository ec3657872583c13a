"""Screening with an exported model file and ONNX Runtime alone: no PyTorch on this path (a test checks it).

The ONNX file is self-describing: its metadata key ``mpoxscan`` holds the class names, the preprocessing, the
temperature, the screening threshold and a model-card summary, so that the file alone is enough to screen.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mpoxscan.deploy.answer import QUALITY_MEASURES, AnswerRule, screened_positive
from mpoxscan.deploy.compression import photo_blockiness
from mpoxscan.errors import MpoxscanError
from mpoxscan.preprocess import Preprocessing

if TYPE_CHECKING:
    from PIL import Image

METADATA_KEY = "mpoxscan"
DISCLAIMER = ("This is a screening aid, not a diagnosis: whatever the answer, see a health worker if you are "
              "worried about a skin lesion.")


@dataclass
class Screening:
    """One photo's answer: "positive", "negative" or "cannot tell" (with a reason), and the numbers behind it."""

    probabilities: dict[str, float]
    predicted: str
    positive_class: str
    positive_probability: float
    threshold: float
    answer: str  # "positive" | "negative" | "cannot tell" (deploy/answer.py)
    reason: str | None = None  # why "cannot tell" (None otherwise)
    measures: dict[str, float] = field(default_factory=dict)  # brightness, sharpness, skin_share, blockiness, offtask

    @property
    def positive(self) -> bool:
        """Screened positive (never for a photo the model cannot judge)."""
        return self.answer == "positive"

    def as_dict(self) -> dict:
        return {"answer": self.answer, "reason": self.reason, "predicted": self.predicted,
                "probabilities": self.probabilities,
                "screening": {"class": self.positive_class, "probability": self.positive_probability,
                              "threshold": self.threshold, "positive": screened_positive(self.answer)},
                "measures": self.measures}


def _metadata(session, source) -> dict:
    props = session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in props:
        raise MpoxscanError(f"{source}: an ONNX model without mpoxscan metadata (export it with `mpoxscan export`)")
    try:
        meta = json.loads(props[METADATA_KEY])
        for key in ("classes", "preprocessing", "screening_threshold"):
            meta[key]
    except (ValueError, KeyError) as exc:
        raise MpoxscanError(f"{source}: unreadable mpoxscan metadata ({exc})") from None
    return meta


class Screener:
    """An exported model, ready to screen photos: ``Screener(path).screen(image)``."""

    def __init__(self, model: Path | str | bytes, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.source = model if isinstance(model, bytes) else Path(model)
        if not isinstance(model, bytes) and not Path(model).is_file():
            raise MpoxscanError(f"{model}: no such model file")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.log_severity_level = 3  # ORT's own warnings go to stderr otherwise
        try:
            data = model if isinstance(model, bytes) else str(model)
            self.session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            name = "model bytes" if isinstance(model, bytes) else model
            raise MpoxscanError(f"{name}: not a model ONNX Runtime can load ({str(exc).splitlines()[0][:120]})") from None
        self.meta = _metadata(self.session, "model bytes" if isinstance(model, bytes) else model)
        self.classes: list[str] = list(self.meta["classes"])
        self.positive_class: str = self.meta.get("positive_class", self.classes[0])
        self.threshold: float = float(self.meta["screening_threshold"])
        self.rule = AnswerRule.from_meta(self.meta)
        p = self.meta["preprocessing"]
        self.preprocessing = Preprocessing.from_dict(p)
        self.outputs = [o.name for o in self.session.get_outputs()]

    @property
    def input_size(self) -> int:
        return self.preprocessing.input_size

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Raw outputs (``logits``, ``probabilities``, ...) for a preprocessed batch (N, 3, S, S)."""
        return dict(zip(self.outputs, self.session.run(None, {"image": batch.astype(np.float32, copy=False)})))

    def predict_proba(self, images: list) -> np.ndarray:
        """Calibrated class probabilities (N, classes) for RGB photos (PIL images)."""
        return self.run(self.preprocessing.batch(images))["probabilities"]

    def measures(self, outputs: dict[str, np.ndarray], k: int, image: Image.Image | None = None) -> dict[str, float]:
        """The measurements the answer rule reads, for row ``k`` of a batch's outputs (those the file has), and the
        photo's own ``blockiness`` when the decoded ``image`` is given (measured before any resizing; not for a JPEG
        large enough to be decoded at a reduced scale, however it was decoded: deploy/compression.py)."""
        m = {}
        if image is not None and (b := photo_blockiness(image, self.input_size)) is not None:
            m["blockiness"] = round(b, 6)
        if "quality" in outputs:
            m.update({name: round(float(v), 6) for name, v in zip(QUALITY_MEASURES, outputs["quality"][k])})
        if "offtask" in outputs:
            m["offtask"] = round(float(outputs["offtask"][k]), 6)
        return m

    def verdict(self, proba: np.ndarray, short_side: int | None = None, measures: dict[str, float] | None = None) -> Screening:
        """The answer for one row of class probabilities, the photo's short side and the file's measurements."""
        k = self.classes.index(self.positive_class)
        p = float(proba[k])
        measures = measures or {}
        answer, reason = self.rule.decide(p, short_side, measures)
        return Screening({c: round(float(v), 6) for c, v in zip(self.classes, proba)}, self.classes[int(np.argmax(proba))],
                         self.positive_class, round(p, 6), self.threshold, answer, reason, measures)

    def screen(self, image) -> Screening:
        return self.screen_and_map(image)[0]

    def screen_batch(self, images: list) -> list[Screening]:
        """The answers for several photos from one run of the network (archives: deploy/batch.py)."""
        if not images:
            return []
        outputs = self.run(self.preprocessing.batch(images))
        return [self.verdict(outputs["probabilities"][k], min(image.size), self.measures(outputs, k, image))
                for k, image in enumerate(images)]

    def screen_and_map(self, image) -> tuple[Screening, np.ndarray | None, Image.Image]:
        """The answer, the model's own map of where it looked (None if the file has no ``cam`` output), and the
        square crop the network saw (to draw the map on)."""
        seen = self.preprocessing.resize_crop(image)
        outputs = self.run(self.preprocessing.normalize(seen)[None])
        cam = outputs["cam"][0] if "cam" in outputs else None
        answer = self.verdict(outputs["probabilities"][0], min(image.size), self.measures(outputs, 0, image))
        return answer, cam, seen


def bundled_model() -> Path:
    """The default model shipped inside the package (written by `make model`)."""
    path = Path(__file__).resolve().parent.parent / "bundled" / "model.onnx"
    if not path.is_file():
        raise MpoxscanError("no bundled model in this installation: run `make model`, or pass --model FILE")
    return path


def read_metadata(model) -> dict:
    """The ``mpoxscan`` metadata of an ``onnx.ModelProto`` ({} when it has none)."""
    for p in model.metadata_props:
        if p.key == METADATA_KEY:
            return json.loads(p.value)
    return {}


def write_metadata(model, meta: dict) -> None:
    """Set (or replace) the ``mpoxscan`` metadata of an ``onnx.ModelProto`` in place."""
    for p in list(model.metadata_props):
        if p.key == METADATA_KEY:
            model.metadata_props.remove(p)
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta, sort_keys=True)
    model.producer_name = "mpoxscan"
