"""Augmented views of a photo, for skin lesions (which have no up, no left and vary in light and zoom).

View 0 is the plain view (short side resized, centre crop). View k > 0 is a random view whose randomness comes
from the image's checksum and k, so that each view is the same every time it is made (and can be cached). With
``tone`` a view's skin is also moved to a random skin tone (ITA drawn uniformly over the Del Bino range), so that
the network cannot tell the class from the skin's colour. With ``jpeg`` half of the views are first re-encoded as a
JPEG of low quality (10-60, before the crop, as a messaging app compresses a whole photo), so that heavy compression
does not move the answer (issue 13: at quality 10 a quarter of the held-out answers changed).
"""

from __future__ import annotations

import hashlib
import io
import math

import numpy as np
from PIL import Image, ImageEnhance

from mpoxscan.preprocess import Preprocessing

#: Skin-tone views draw their target ITA uniformly from this range (degrees): from dark (< -30) to very light (> 55).
TONE_RANGE = (-50.0, 65.0)
#: JPEG views: the share of views re-encoded, and the range their quality is drawn from.
JPEG_SHARE, JPEG_QUALITY = 0.5, (10, 60)


def view_rng(sha256: str, view: int, seed: int = 0) -> np.random.Generator:
    digest = hashlib.sha256(f"{sha256}:{view}:{seed}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def random_view(image: Image.Image, size: int, rng: np.random.Generator, min_scale: float = 0.5) -> Image.Image:
    """Random resized crop (50-100 % of the area, aspect 3:4 to 4:3), flips, quarter turns, colour jitter."""
    w, h = image.size
    for _ in range(10):
        area = w * h * rng.uniform(min_scale, 1.0)
        aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        cw, ch = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            break
    else:
        cw = ch = min(w, h)
        left, top = (w - cw) // 2, (h - ch) // 2
    out = image.resize((size, size), Image.Resampling.BICUBIC, box=(left, top, left + cw, top + ch), reducing_gap=3.0)
    if rng.random() < 0.5:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    turns = int(rng.integers(0, 4))
    if turns:
        out = out.transpose((Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270)[turns - 1])
    out = ImageEnhance.Brightness(out).enhance(rng.uniform(0.8, 1.2))
    out = ImageEnhance.Contrast(out).enhance(rng.uniform(0.8, 1.2))
    return ImageEnhance.Color(out).enhance(rng.uniform(0.8, 1.2))


def recompress(image: Image.Image, quality: int) -> Image.Image:
    """The photo as a JPEG of this quality would decode (4:2:0 chroma, as phones and messaging apps save)."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=int(quality))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


def make_view(image: Image.Image, prep: Preprocessing, sha256: str, view: int, seed: int = 0,
              tone: bool = False, jpeg: bool = False) -> Image.Image:
    """View ``view`` of a photo at the network's input size (view 0: resize and centre crop, no randomness;
    ``tone``: views k > 0 also get a random skin tone; ``jpeg``: half of them are first heavily compressed)."""
    if view == 0:
        return prep.resize_crop(image)
    rng = view_rng(sha256, view, seed)
    if jpeg:
        # Drawn from a generator of its own, so that the crops, flips and tones of the views stay those of the
        # plain recipe (the caches of -jpeg views differ from the plain ones only where compression does).
        jpeg_rng = view_rng(sha256, view, seed + 7919)
        if jpeg_rng.random() < JPEG_SHARE:
            image = recompress(image, int(jpeg_rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1)))
    out = random_view(image, prep.input_size, rng)
    if tone:
        from mpoxscan.data.skin import retone

        out = retone(out, float(rng.uniform(*TONE_RANGE)))
    return out
