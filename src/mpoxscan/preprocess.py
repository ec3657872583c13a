"""Turn an RGB photo into a network's input array, with NumPy and Pillow only (screening must not need PyTorch)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

#: Shapes up to this aspect ratio are resized whole, then cropped (as the phone page does); thinner ones only where
#: the crop needs (the image loader refuses anything over 8:1, so this path is for other callers only).
EXACT_UP_TO_ASPECT = 8
_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


@dataclass(frozen=True)
class Preprocessing:
    """How a network expects its input: square size, normalisation and the resize-then-crop rule."""

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    # Fraction of the resized short side kept by the centre crop; 0.875 is the ImageNet evaluation convention
    # (resize to 256, crop 224), 1.0 keeps the whole short side (lesions are not always centred).
    crop_pct: float = 1.0

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        """From its JSON form (``dataclasses.asdict``), as checkpoints, cards and model metadata store it."""
        return cls(int(d["input_size"]), tuple(d["mean"]), tuple(d["std"]), d.get("interpolation", "bicubic"),
                   float(d.get("crop_pct", 1.0)))

    def resize_crop(self, image: Image.Image) -> Image.Image:
        """Resize the short side to ``input_size / crop_pct``, then cut the centre square of ``input_size``.

        Never allocates more than a bounded image: for ordinary shapes (long side up to ``EXACT_UP_TO_ASPECT`` times
        the short side: every photo ``load_image`` lets through) the whole photo is resized and then cropped, the
        arithmetic that the phone page's ``resize.js`` reproduces exactly; for a thinner strip (only from callers
        that bypass the loader) the centre square is resampled straight from its region of the source (Pillow's
        ``box``), so that a 50000 x 1 strip costs one 224 x 224 image, not an 11-million-pixel-wide resize."""
        size = self.input_size
        short = max(1, round(size / self.crop_pct))
        w, h = image.size
        scale = short / min(w, h)
        new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
        left, top = (new_w - size) // 2, (new_h - size) // 2
        resample = _RESAMPLE[self.interpolation]
        if max(new_w, new_h) > EXACT_UP_TO_ASPECT * max(size, short):
            sx, sy = w / new_w, h / new_h
            box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
            return image.resize((size, size), resample, box=box, reducing_gap=3.0)
        resized = image.resize((new_w, new_h), resample, reducing_gap=3.0)
        return resized.crop((left, top, left + size, top + size))

    def normalize(self, image: Image.Image) -> np.ndarray:
        """RGB image of ``input_size`` -> float32 array (3, H, W), scaled to [0, 1] then standardised."""
        arr = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        arr = (arr - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(arr.transpose(2, 0, 1))

    def __call__(self, image: Image.Image) -> np.ndarray:
        return self.normalize(self.resize_crop(image))

    def batch(self, images: list[Image.Image]) -> np.ndarray:
        """Several photos -> float32 array (N, 3, H, W)."""
        return np.stack([self(im) for im in images]) if images else np.zeros((0, 3, self.input_size, self.input_size), np.float32)
