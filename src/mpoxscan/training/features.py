"""Pooled features of frozen ImageNet backbones, cached on disk by model, view and image checksum.

The frozen backbone runs in ONNX Runtime (about 2.5x faster than eager PyTorch on this CPU, measured), from an
in-memory export of the zoo's PyTorch model.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from mpoxscan.images import load_image
from mpoxscan.preprocess import Preprocessing
from mpoxscan.training.views import make_view

DEFAULT_CACHE = Path(os.environ.get("MPOXSCAN_CACHE", Path.home() / ".cache" / "mpoxscan"))


def task_preprocessing(model_name: str) -> Preprocessing:
    """The zoo's preprocessing, but keeping the whole short side: a lesion need not sit in the centre."""
    from mpoxscan.models import get_spec

    return dataclasses.replace(get_spec(model_name).preprocessing, crop_pct=1.0)


def preprocessing_for(model_name: str, input_size: int | None) -> Preprocessing:
    """The task's preprocessing at ``input_size`` (None: the backbone's own); a checkpoint's card and the exported
    file carry it."""
    prep = task_preprocessing(model_name)
    return dataclasses.replace(prep, input_size=input_size) if input_size else prep


def frozen_session(model_name: str, until_block: int | None = None, threads: int | None = None,
                   input_size: int | None = None):
    """An ONNX Runtime session of the frozen pretrained backbone: images (N, 3, S, S) -> pooled features (N, C),
    or, with ``until_block``, the activation entering that block (what fine-tuning caches); S is ``input_size``,
    by default the backbone's own."""
    import onnxruntime as ort
    import torch

    from mpoxscan.models.onnx import onnx_bytes
    from mpoxscan.models import create_model

    model = create_model(model_name, pretrained=True).eval()

    class Frozen(torch.nn.Module):
        def __init__(self, backbone):
            super().__init__()
            self.backbone = backbone

        def forward(self, x):
            if until_block is None:
                return self.backbone.forward_pooled(x)
            return self.backbone.forward_until(x, until_block)

    data = onnx_bytes(Frozen(model), input_size or model.spec.preprocessing.input_size, ["out"])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


class FeatureCache:
    """Arrays keyed by image checksum, one ``.npz`` per (kind, model, view): rewritten atomically when it grows.
    Holds the pooled features of the linear strategy and the frozen activations of fine-tuning."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root else DEFAULT_CACHE

    def _file(self, name: str) -> Path:
        return self.root / f"{name}.npz"

    def load(self, name: str) -> dict[str, np.ndarray]:
        path = self._file(name)
        if not path.exists():
            return {}
        with np.load(path) as data:
            key = next(k for k in data.files if k != "sha256")  # "values" (older caches: "features", "acts")
            return dict(zip(data["sha256"].tolist(), data[key]))

    def save(self, name: str, table: dict[str, np.ndarray]) -> None:
        path = self._file(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp-{os.getpid()}.npz")
        keys = sorted(table)
        np.savez(tmp, sha256=np.array(keys), values=np.stack([table[k] for k in keys]))
        tmp.replace(path)


def extract(model_name: str, items: list[tuple[str, str]], views: list[int], cache: FeatureCache,
            seed: int = 0, batch: int = 32, progress: bool = True) -> dict[int, np.ndarray]:
    """Features of ``items`` (path, sha256) for each view in ``views``: {view: (n, C)}, computing only what the
    cache lacks."""
    from tqdm import tqdm

    prep = task_preprocessing(model_name)
    names = {v: f"features/{model_name}/view{v}-seed{seed}" for v in views}
    tables = {v: cache.load(names[v]) for v in views}
    unique = dict((sha, path) for path, sha in items)
    todo = [(v, path, sha) for v in views for sha, path in unique.items() if sha not in tables[v]]
    if todo:
        session = frozen_session(model_name)
        with tqdm(total=len(todo), desc=f"features {model_name}", unit="img", disable=not progress) as bar:
            for start in range(0, len(todo), batch):
                chunk = todo[start:start + batch]
                images = [make_view(load_image(p, min_side=prep.input_size), prep, s, v, seed) for v, p, s in chunk]
                feats = session.run(None, {"image": np.stack([prep.normalize(im) for im in images])})[0]
                for (v, _p, s), f in zip(chunk, feats):
                    tables[v][s] = f.astype(np.float32)
                bar.update(len(chunk))
        for v in views:
            cache.save(names[v], tables[v])
    return {v: np.stack([tables[v][sha] for _, sha in items]) for v in views}
