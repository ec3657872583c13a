"""How heavily a photo was JPEG-compressed, measured at its own resolution (the answer rule's "too compressed").

A JPEG kept at low quality keeps little more than the mean of each 8 x 8 block, so the steps between neighbouring
pixels are much larger on one line in eight than elsewhere. Measured on the photo as decoded, before any resizing:
the network's input is resized by other than a whole factor for most photos, which blurs the block grid away
although the compression still misleads the network (measured on the held-out photos at JPEG quality 10: with the
measure taken at the network's input, 21 of the 22 answers that still changed came from photos resized to it).

A large JPEG (short side over twice the network's input) is not measured: screening decodes it at a reduced scale
(``load_image(..., min_side=...)``: 1/2 to 1/8, which averages the blocks away, as the resize to the network's input
would), and the page skips the same photos. :func:`photo_blockiness` skips it however the caller decoded it (from the
loader's ``source_size`` and ``source_format``), so that a full decode never meets a limit fitted without such photos
(the leave-one-site-out answers did, and refused 153 large atlas and MSLD JPEGs as "too compressed").

Hand-written because no library at hand measures it (scikit-image and OpenCV have no JPEG-artefact measure); the
phone page mirrors it in ``web/static/answer.js`` (``blockiness``), and a test runs both on the same pixels.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from mpoxscan.images import decoded_reduced

#: The measure reads the centre square of at most this many pixels a side, unscaled: enough lines for a stable
#: ratio, and a fixed cost on the phone whatever the photo's size.
CROP = 256
#: JPEG's block size.
BLOCK = 8
#: ITU-R BT.601 luma weights (as the model file's own quality measures).
LUMA = (0.299, 0.587, 0.114)


def centre_crop_box(width: int, height: int, crop: int = CROP) -> tuple[int, int, int, int]:
    """(left, top, width, height) of the centre square read by :func:`blockiness` (the page cuts the same one)."""
    w, h = min(width, crop), min(height, crop)
    return (width - w) // 2, (height - h) // 2, w, h


def _phase_peak(steps: np.ndarray) -> float:
    """Mean absolute steps between neighbouring columns (or rows) -> the largest of the 8 phases' means over the
    mean of the 7 others (the largest rather than phase 0: a crop shifts the grid)."""
    n = len(steps) // BLOCK * BLOCK  # at least 2 blocks: blockiness_of_luma measures no thinner picture
    phases = steps[:n].reshape(n // BLOCK, BLOCK).mean(0)
    peak = float(phases.max())
    rest = (float(phases.sum()) - peak) / (BLOCK - 1)
    return peak / (rest + 0.05)  # + 0.05 (of 255): a flat picture has no steps, and no blocks either


def blockiness_of_luma(luma: np.ndarray) -> float:
    """(H, W) luma on a 0..255 scale -> about 1 for a photo, several for a heavily compressed JPEG: the phase peak of
    the steps across and of the steps down, averaged."""
    luma = np.asarray(luma, np.float64)
    if min(luma.shape) < 2 * BLOCK + 1:  # too few steps to compare phases (the loader refuses such photos anyway)
        return 0.0
    across = np.abs(np.diff(luma, axis=1)).mean(0)
    down = np.abs(np.diff(luma, axis=0)).mean(1)
    return (_phase_peak(across) + _phase_peak(down)) / 2


def blockiness(image: Image.Image) -> float:
    """The blockiness of a decoded photo (PIL, any mode), on its centre square of at most :data:`CROP` pixels."""
    left, top, w, h = centre_crop_box(*image.size)
    rgb = np.asarray(image.crop((left, top, left + w, top + h)).convert("RGB"), np.float64)
    return blockiness_of_luma(rgb @ np.array(LUMA))


def photo_blockiness(image: Image.Image, input_size: int | None = None) -> float | None:
    """:func:`blockiness` where screening measures it, else None: not for a photo the image loader decoded at a
    reduced scale, nor, given the network's ``input_size``, for a JPEG large enough that screening would have
    (:func:`~mpoxscan.images.decoded_reduced`), whichever way this one was decoded."""
    source_size = tuple(image.info.get("source_size", image.size))
    if source_size != tuple(image.size):
        return None
    if input_size and decoded_reduced(source_size, image.info.get("source_format"), input_size):
        return None
    return blockiness(image)
