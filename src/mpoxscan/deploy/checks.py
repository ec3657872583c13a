"""The measurements behind "cannot tell", written as PyTorch modules so that they are exported into the model file.

Putting them in the graph means that the phone (ONNX Runtime Web) and the server (ONNX Runtime) measure with the same
arithmetic, and the file alone decides (the thresholds are in its metadata; the rule is ``deploy/answer.py``).

- :class:`QualityMeasures`: brightness, sharpness (variance of the Laplacian) and skin share of the network's input.
- :class:`OfftaskScore`: how unlike the training photos a photo is: the distance of its pooled features (mean and
  standard deviation of each channel of the activation entering a chosen block) from the principal subspace of the
  training photos' features. Hand-written because it has to live inside the exported graph; the fit uses
  scikit-learn. Chosen by measurement (benchmarks/results/offtask/): at the last frozen ImageNet block these
  texture statistics separate skin close-ups from other pictures far better than the fine-tuned network's own
  pooled features or its softmax confidence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

#: ITU-R BT.601 luma weights.
_LUMA = (0.299, 0.587, 0.114)


class QualityMeasures(nn.Module):
    """Normalised input (N, 3, S, S) -> (N, 3): brightness (mean luma, 0..1), sharpness (variance of the Laplacian of
    the luma on a 0..255 scale, interior pixels) and skin share (pixels inside the Chai & Ngan (1999) YCbCr skin box,
    77 <= Cb <= 127 and 133 <= Cr <= 173, which holds for light and dark skin alike because it ignores luma)."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("luma", torch.tensor(_LUMA, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("laplacian", torch.tensor([[0., 1., 0.], [1., -4., 1.], [0., 1., 0.]]).view(1, 1, 3, 3))
        # Cb and Cr as weights on R, G, B (0..255), offsets added after.
        self.register_buffer("cb", torch.tensor([-0.168736, -0.331264, 0.5]).view(1, 3, 1, 1))
        self.register_buffer("cr", torch.tensor([0.5, -0.418688, -0.081312]).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        rgb = (image * self.std + self.mean).clamp(0, 1) * 255.0
        y = (rgb * self.luma).sum(1, keepdim=True)
        brightness = y.mean((1, 2, 3)) / 255.0
        lap = torch.nn.functional.conv2d(y, self.laplacian)
        sharpness = lap.var((1, 2, 3), unbiased=False)
        cb = (rgb * self.cb).sum(1) + 128.0
        cr = (rgb * self.cr).sum(1) + 128.0
        skin = (cb >= 77) & (cb <= 127) & (cr >= 133) & (cr <= 173)
        return torch.stack([brightness, sharpness, skin.float().mean((1, 2))], dim=1)


def pooled_moments(h: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, 2C): the mean and the standard deviation of each channel (texture statistics that stay
    meaningful for photos no class resembles)."""
    mean = h.mean((2, 3))
    std = ((h - mean[:, :, None, None]) ** 2).mean((2, 3)).clamp_min(1e-12).sqrt()
    return torch.cat([mean, std], dim=1)


@dataclass
class OfftaskFit:
    """What the off-task score needs, fitted on training photos' features (NumPy arrays)."""

    block: int  # the features are the pooled moments of the activation entering this block
    center: np.ndarray  # (D,)
    basis: np.ndarray  # (D, K): orthonormal principal directions of the training photos' features
    scale: float  # the median distance of training photos from the subspace: scores are in units of it

    def describe(self) -> dict:
        return {"block": self.block, "features": int(self.center.shape[0]), "components": int(self.basis.shape[1]),
                "score": "distance of the pooled moments from the training photos' principal subspace, "
                         "in units of the training photos' median distance"}

    def score(self, features: np.ndarray) -> np.ndarray:
        """The score of :class:`OfftaskScore`, in NumPy (for fitting and tests)."""
        x = features - self.center
        return np.linalg.norm(x - (x @ self.basis) @ self.basis.T, axis=1) / self.scale


def fit_offtask(features: np.ndarray, block: int, components: int = 32) -> OfftaskFit:
    """The principal subspace (scikit-learn's PCA) of training photos' pooled moments."""
    from sklearn.decomposition import PCA

    k = int(min(components, features.shape[0] - 1, features.shape[1]))
    pca = PCA(n_components=k, svd_solver="full").fit(features)
    fit = OfftaskFit(block, pca.mean_.astype(np.float32), pca.components_.T.astype(np.float32), 1.0)
    fit.scale = float(np.median(fit.score(features))) or 1.0
    return fit


class OfftaskScore(nn.Module):
    """Pooled moments at a block -> one score per photo: the distance from the training photos' principal subspace,
    in units of the training photos' median distance. Photos of other things (a cat, a page, a screen) have texture
    statistics that the principal directions of skin close-ups cannot reconstruct."""

    def __init__(self, fit: OfftaskFit) -> None:
        super().__init__()
        self.block = fit.block
        self.register_buffer("center", torch.from_numpy(np.asarray(fit.center, np.float32)))
        self.register_buffer("basis", torch.from_numpy(np.asarray(fit.basis, np.float32)))
        self.scale = float(fit.scale)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = pooled_moments(h) - self.center
        residual = x - (x @ self.basis) @ self.basis.T
        return residual.pow(2).sum(1).sqrt() / self.scale
