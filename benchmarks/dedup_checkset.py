"""The de-duplication check set: altered copies of real photos, of the kinds that public mpox image sets hold.

Web re-hosts of one photo are cropped (often tightly), recoloured, rotated, watermarked, squashed to a square and
re-encoded; a de-duplicator that only catches resizes lets such copies straddle train and test. Each function takes
an RGB photo and a random generator and returns one altered copy; ``TRANSFORMS`` names them all, so that recall can
be reported per kind. Used by benchmarks/dedup_bench.py (and, at a tiny size, by tests/test_curate.py).
"""

from __future__ import annotations

import io
import math
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps


def _crop_fraction(image: Image.Image, rng: np.random.Generator, area: tuple[float, float]) -> Image.Image:
    """A crop keeping a random share of the area (aspect within 3:4..4:3 of the original), anywhere in the photo."""
    w, h = image.size
    share = rng.uniform(*area)
    aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
    cw = min(w, max(16, int(round(w * math.sqrt(share * aspect)))))
    ch = min(h, max(16, int(round(h * math.sqrt(share / aspect)))))
    left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return image.crop((left, top, left + cw, top + ch))


def crop_centre(image, rng):
    """The centre 80-90 % of each side (a frame or a caption trimmed)."""
    w, h = image.size
    f = rng.uniform(0.80, 0.90)
    cw, ch = int(w * f), int(h * f)
    return image.crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch))


def crop_zoom(image, rng):
    """40-65 % of the area, anywhere: the tight zoomed crops of re-hosted outbreak photos."""
    return _crop_fraction(image, rng, (0.40, 0.65)).resize(image.size, Image.Resampling.BICUBIC)


def crop_side(image, rng):
    """One side cut by 15-30 % (a banner or a neighbouring panel removed)."""
    w, h = image.size
    cut = rng.uniform(0.15, 0.30)
    side = int(rng.integers(0, 4))
    box = [(int(w * cut), 0, w, h), (0, 0, int(w * (1 - cut)), h), (0, int(h * cut), w, h), (0, 0, w, int(h * (1 - cut)))][side]
    return image.crop(box)


def recolour_hue(image, rng):
    """Hue turned by 15-40 degrees and saturation changed (a colour filter, another camera's white balance)."""
    hsv = np.asarray(image.convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(int) + int(rng.uniform(11, 28)) * (1 if rng.random() < 0.5 else -1)) % 256
    out = Image.fromarray(hsv, "HSV").convert("RGB")
    return ImageEnhance.Color(out).enhance(rng.uniform(0.6, 1.5))


def recolour_tone(image, rng):
    """Gamma, contrast and a warm or cool cast (print scans, old photos, phone filters)."""
    a = np.asarray(image, np.float32) / 255.0
    a = a ** rng.uniform(0.6, 1.6)
    cast = np.array([rng.uniform(0.8, 1.2), rng.uniform(0.9, 1.1), rng.uniform(0.8, 1.2)], np.float32)
    out = Image.fromarray(np.clip(a * cast * 255.0, 0, 255).astype(np.uint8))
    return ImageEnhance.Contrast(out).enhance(rng.uniform(0.7, 1.4))


def recolour_sepia(image, rng):
    """A sepia or grey-tinted print (historical outbreak photos re-hosted this way)."""
    gray = ImageOps.grayscale(image)
    return ImageOps.colorize(gray, black=(int(rng.integers(20, 60)), int(rng.integers(10, 40)), 0),
                             white=(255, int(rng.integers(225, 250)), int(rng.integers(180, 230))))


def rotate_quarter(image, rng):
    """A quarter turn or a mirror, then a 5-10 % crop."""
    t = [Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270,
         Image.Transpose.FLIP_LEFT_RIGHT][int(rng.integers(0, 4))]
    return _crop_fraction(image.transpose(t), rng, (0.81, 0.90))


def rotate_small(image, rng):
    """Turned by 4-12 degrees and cropped to the largest upright rectangle (a re-photographed print)."""
    angle = rng.uniform(4, 12) * (1 if rng.random() < 0.5 else -1)
    turned = image.rotate(angle, resample=Image.Resampling.BICUBIC, expand=False)
    w, h = image.size
    a = math.radians(abs(angle))
    # Largest axis-aligned rectangle inside the turned frame, to leave no black corners.
    f = 1 / (math.cos(a) + max(w / h, h / w) * math.sin(a))
    cw, ch = int(w * f), int(h * f)
    return turned.crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch))


def watermark(image, rng):
    """A corner logo with text, and a faint diagonal stock-photo mark across the middle."""
    out = image.convert("RGBA")
    w, h = out.size
    layer = Image.new("RGBA", out.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    font = ImageFont.load_default(size=max(10, h // 14))
    corner = int(rng.integers(0, 4))
    x = 6 if corner in (0, 2) else int(w * 0.55)
    y = 6 if corner in (0, 1) else int(h * 0.85)
    draw.rectangle((x, y, x + int(w * 0.4), y + h // 10), fill=(255, 255, 255, 170))
    draw.text((x + 4, y + 2), "DermAtlas (c)", fill=(20, 60, 140, 255), font=font)
    diag = Image.new("RGBA", out.size, (0, 0, 0, 0))
    ImageDraw.Draw(diag).text((w // 6, h // 2 - h // 14), "stock photo", fill=(255, 255, 255, 90),
                              font=ImageFont.load_default(size=max(12, h // 8)))
    layer = Image.alpha_composite(layer, diag.rotate(25, resample=Image.Resampling.BICUBIC))
    return Image.alpha_composite(out, layer).convert("RGB")


def squash(image, rng):
    """Stretched to a 224 x 224 square, as the re-hosted data sets stored every picture."""
    return image.resize((224, 224), Image.Resampling.BILINEAR)


def reencode(image, rng):
    """Halved, then saved as a low-quality WebP or JPEG (messaging apps, thumbnails)."""
    w, h = image.size
    small = image.resize((max(16, w // 2), max(16, h // 2)), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    if rng.random() < 0.5:
        small.save(buf, "WEBP", quality=int(rng.integers(20, 45)))
    else:
        small.save(buf, "JPEG", quality=int(rng.integers(15, 35)))
    buf.seek(0)
    with Image.open(buf) as decoded:
        return decoded.convert("RGB")


def combined(image, rng):
    """A crop of 55-80 % of the area, mirrored, recoloured, and re-encoded: several alterations at once."""
    out = _crop_fraction(image, rng, (0.55, 0.80)).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return reencode(recolour_hue(out, rng), rng)


def padded(image, rng):
    """Placed on a larger canvas (a figure panel with a white or black margin and a caption strip)."""
    w, h = image.size
    pad = int(max(w, h) * rng.uniform(0.08, 0.18))
    colour = (255, 255, 255) if rng.random() < 0.5 else (0, 0, 0)
    canvas = Image.new("RGB", (w + 2 * pad, h + 3 * pad), colour)
    canvas.paste(image, (pad, pad))
    ImageDraw.Draw(canvas).text((pad, h + pad + pad // 3), "Figure 2. Lesions on day 5",
                                fill=(128, 128, 128), font=ImageFont.load_default(size=max(10, pad // 2)))
    return canvas


TRANSFORMS: dict[str, Callable[[Image.Image, np.random.Generator], Image.Image]] = {
    "crop_centre": crop_centre, "crop_zoom": crop_zoom, "crop_side": crop_side,
    "recolour_hue": recolour_hue, "recolour_tone": recolour_tone, "recolour_sepia": recolour_sepia,
    "rotate_quarter": rotate_quarter, "rotate_small": rotate_small, "watermark": watermark,
    "squash": squash, "reencode": reencode, "combined": combined, "padded": padded,
}
