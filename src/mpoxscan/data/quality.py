"""Filters for images that should not be in a training set, each with a reason."""

from __future__ import annotations

from dataclasses import dataclass

from mpoxscan.data.fingerprint import Fingerprint


@dataclass(frozen=True)
class QualityParams:
    """Defaults reject none of the 983 real MSLD images (measured: short side >= 69 px, aspect <= 1.33, contrast
    >= 6.5, colourfulness >= 8.9) while catching icons, banners, blank frames and grayscale copies."""

    min_side: int = 64
    max_aspect: float = 3.0
    min_contrast: float = 4.0  # standard deviation of the grayscale image, 0-255
    min_colourfulness: float = 2.0  # mean |R-G| + |G-B|; JPEG chroma noise on a gray picture stays below ~1


def rejection_reason(fp: Fingerprint, params: QualityParams) -> str | None:
    """Why this image is rejected, or None to keep it. An image the loader refused for its shape (it has a size but
    no pixels) gets this filter's own size reason, which is stricter than the loader's limits."""
    if fp.error and not (fp.width and fp.height):
        return f"unreadable: {fp.error}"
    short, long = sorted((fp.width, fp.height))
    if short < params.min_side:
        return f"too small: {fp.width}x{fp.height} (short side < {params.min_side} px)"
    if long / short > params.max_aspect:
        return f"extreme aspect ratio: {fp.width}x{fp.height} (> {params.max_aspect:g}:1)"
    if fp.error:  # refused by the loader although within this filter's limits (looser ones were asked for)
        return f"refused: {fp.error}"
    if fp.gray_std < params.min_contrast:
        return f"nearly uniform: contrast {fp.gray_std:.1f} < {params.min_contrast:g}"
    if fp.colourfulness < params.min_colourfulness:
        return f"grayscale only: colourfulness {fp.colourfulness:.1f} < {params.min_colourfulness:g}"
    return None
