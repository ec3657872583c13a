"""Skin tone of a photo: a skin-pixel mask and the Individual Typology Angle (ITA) of the skin around the lesions.

NumPy, Pillow and scikit-image only (no PyTorch): curate computes it while fingerprinting, and the training views
use ``retone`` to move a photo along the skin-tone axis.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

#: Del Bino / Chardon skin-tone categories, lightest first: (name, lower ITA bound in degrees, exclusive).
ITA_BINS = (("very light", 55.0), ("light", 41.0), ("intermediate", 28.0), ("tan", 10.0), ("brown", -30.0),
            ("dark", -math.inf))
BIN_NAMES = tuple(name for name, _ in ITA_BINS)

MIN_SKIN_PIXELS = 200  # on the 256-px working copy: fewer and the median is noise
MIN_SKIN_FRACTION = 0.05
LESION_QUANTILE = 0.75  # skin pixels redder (a*) than this quantile are left out: erythema and lesions, not tone


def skin_mask(rgb: np.ndarray) -> np.ndarray:
    """Boolean (h, w) mask of skin-coloured pixels of a uint8 RGB array.

    The rule is Chai & Ngan's chrominance box (IEEE TCSVT 9(4), 1999): 77 <= Cb <= 127 and 133 <= Cr <= 173 in
    ITU-R BT.601 YCbCr. It ignores luminance, so it keeps dark skin that RGB rules such as Kovac's (R > 95) drop; we
    add only a luminance window (16 < Y < 250) because chrominance is noise in near-black pixels and specular
    highlights carry no tone.
    """
    ycc = np.asarray(Image.fromarray(np.ascontiguousarray(rgb[..., :3]), "RGB").convert("YCbCr"), np.int16)
    y, cb, cr = ycc[..., 0], ycc[..., 1], ycc[..., 2]
    return (cb >= 77) & (cb <= 127) & (cr >= 133) & (cr <= 173) & (y > 16) & (y < 250)


def _lab(rgb: np.ndarray) -> np.ndarray:
    from skimage.color import rgb2lab

    return rgb2lab(rgb[..., :3].astype(np.float32) / 255.0)


def ita_of_lab(L: float, b: float) -> float:
    """ITA = arctan((L* - 50) / b*) in degrees; b* is floored at a small positive value (skin is never blue)."""
    return float(np.degrees(np.arctan((L - 50.0) / max(b, 1e-3))))


def skin_tone(rgb: np.ndarray) -> tuple[float, float] | None:
    """Median (L*, b*) of the skin pixels, leaving out the reddest quarter (lesions); None when too little skin."""
    mask = skin_mask(rgb)
    if mask.sum() < max(MIN_SKIN_PIXELS, MIN_SKIN_FRACTION * mask.size):
        return None
    lab = _lab(rgb)[mask]
    calm = lab[lab[:, 1] <= np.quantile(lab[:, 1], LESION_QUANTILE)]
    return float(np.median(calm[:, 0])), float(np.median(calm[:, 2]))


def ita(image: Image.Image | np.ndarray) -> float | None:
    """The photo's Individual Typology Angle (degrees; higher is lighter), or None when it shows too little skin."""
    rgb = np.asarray(image.convert("RGB")) if isinstance(image, Image.Image) else np.asarray(image)
    tone = skin_tone(rgb)
    return None if tone is None else ita_of_lab(*tone)


#: The size curate measures a photo's skin tone at (data.fingerprint's working copy): a photo measured elsewhere
#: (the training export) is measured at the same size, so that the two values agree.
WORKING_SIDE = 256


def working_ita(data: bytes | Path) -> float | None:
    """ita() of an image file as curate measures it: decoded at a reduced scale where the JPEG allows, reduced to
    WORKING_SIDE (long side, box filter)."""
    from mpoxscan.images import load_image

    image = load_image(data, min_side=WORKING_SIDE)
    image.thumbnail((WORKING_SIDE, WORKING_SIDE), Image.Resampling.BOX)
    return ita(image)


def ita_bin(value: float | None) -> str | None:
    """The Del Bino / Chardon category of an ITA value (very light > 55 ... dark <= -30); None for None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return next(name for name, low in ITA_BINS if value > low)


def ita_bins(values: np.ndarray) -> np.ndarray:
    """ita_bin of each value of a float array at once (NaN: None), as an object array: the skin-tone bootstraps bin
    the same photos a thousand times."""
    values = np.asarray(values, float)
    out = np.full(values.shape, None, object)
    todo = ~np.isnan(values)
    for name, low in ITA_BINS:  # the first bin whose lower bound the value exceeds, as ita_bin
        hit = todo & (values > low)
        out[hit] = name
        todo &= ~hit
    return out


def retone(image: Image.Image, target_ita: float) -> Image.Image:
    """The photo with its skin moved to ``target_ita`` along the skin-tone axis: L* of the skin is scaled (keeping
    the lesions' relative contrast) so that arctan((L* - 50) / b*) hits the target, b* and a* unchanged; the change
    fades out through a blurred skin mask so that the background keeps its colour. No skin: the photo unchanged."""
    from skimage.color import lab2rgb

    rgb = np.asarray(image.convert("RGB"))
    tone = skin_tone(rgb)
    if tone is None:
        return image
    L, b = tone
    target_L = float(np.clip(50.0 + max(b, 1e-3) * math.tan(math.radians(target_ita)), 5.0, 95.0))
    mask = Image.fromarray(skin_mask(rgb).astype(np.uint8) * 255).filter(ImageFilter.GaussianBlur(max(rgb.shape[:2]) / 64))
    weight = np.asarray(mask, np.float32)[..., None] / 255.0
    lab = _lab(rgb)
    scaled = lab.copy()
    scaled[..., 0] = np.clip(lab[..., 0] * (target_L / max(L, 1.0)), 0.0, 100.0)
    out = lab2rgb(weight * scaled + (1 - weight) * lab)
    return Image.fromarray((np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8), "RGB")
