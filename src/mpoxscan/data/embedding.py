"""A global picture descriptor for finding copies that perceptual hashes miss: crops, zooms, recolours.

The pooled features of an ImageNet-pretrained CNN (MobileNetV2, the zoo's fastest) change little when a photo is
cropped by half, recoloured, watermarked or re-encoded, so a copy's nearest neighbours by cosine similarity include
its original even where the pHash differs in 30 of 64 bits (measured: benchmarks/results/dedup.md). They only
propose candidates; each candidate is then verified by aligning the two pictures (data/duplicates.py), because
photos of similar rashes are also close in this space.

The network runs in ONNX Runtime inside curate's worker processes: the parent exports it once (PyTorch is needed
only for that), each worker builds a one-thread session from the bytes.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

MODEL = "mobilenetv2_100"
SIDE = 224  # the whole picture squeezed to a square: a copy squashed to 224 x 224 by a re-host stays close


def model_bytes(name: str = MODEL) -> bytes:
    """The pretrained backbone, images (N, 3, SIDE, SIDE) -> pooled features (N, C), as ONNX bytes."""
    import torch

    from mpoxscan.models import create_model
    from mpoxscan.models.onnx import onnx_bytes

    backbone = create_model(name, pretrained=True).eval()

    class Pooled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = backbone

        def forward(self, x):
            return self.backbone.forward_pooled(x)

    return onnx_bytes(Pooled(), SIDE, ["features"])


class Embedder:
    """One ONNX Runtime session (one thread: curate runs one per worker process) and the backbone's normalisation."""

    def __init__(self, onnx: bytes, name: str = MODEL) -> None:
        import onnxruntime as ort

        from mpoxscan.models import get_spec

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(onnx, options, providers=["CPUExecutionProvider"])
        prep = get_spec(name).preprocessing
        self.mean = np.asarray(prep.mean, np.float32)
        self.std = np.asarray(prep.std, np.float32)

    def __call__(self, image: Image.Image) -> np.ndarray:
        """Unit-length float16 descriptor of an RGB picture."""
        square = image.resize((SIDE, SIDE), Image.Resampling.BILINEAR)
        x = ((np.asarray(square, np.float32) / 255.0 - self.mean) / self.std).transpose(2, 0, 1)[None]
        f = self.session.run(None, {"image": x})[0][0]
        return (f / max(float(np.linalg.norm(f)), 1e-12)).astype(np.float16)


def nearest(vectors: np.ndarray, k: int, block: int = 2048, queries: np.ndarray | None = None) -> np.ndarray:
    """(n, k) indices of each row's k most similar other rows (cosine; rows are unit length), in blocks so that
    memory stays O(block x n) for large pools. ``queries``: only these rows' lists ((len(queries), k), in that
    order), each still searched among all rows."""
    n = len(vectors)
    k = min(k, n - 1)
    queries = np.arange(n) if queries is None else np.asarray(queries, dtype=np.int64)
    if k <= 0:
        return np.zeros((len(queries), 0), dtype=np.int64)
    v = vectors.astype(np.float32)
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), block):
        chunk = queries[start:start + block]
        sims = v[chunk] @ v.T
        rows = np.arange(len(chunk))
        sims[rows, chunk] = -np.inf
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.argsort(-sims[rows[:, None], top], axis=1)
        out[start:start + block] = top[rows[:, None], order]
    return out
