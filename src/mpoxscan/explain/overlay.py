"""Draw a heat map over the photo the network saw, with the answer written in the picture (Pillow + NumPy only,
so that it also runs where only ONNX Runtime is installed)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# A perceptually ordered blue -> cyan -> yellow -> red ramp (no matplotlib needed on the screening path).
_RAMP = np.array([[0, 0, 0.5], [0, 0.4, 1], [0, 0.9, 0.9], [1, 0.95, 0], [1, 0.4, 0], [0.75, 0, 0]], np.float32)


def colourise(heat: np.ndarray) -> np.ndarray:
    """(H, W) in [0, 1] -> (H, W, 3) uint8."""
    pos = np.clip(heat, 0, 1) * (len(_RAMP) - 1)
    low = np.floor(pos).astype(int).clip(0, len(_RAMP) - 2)
    frac = (pos - low)[..., None]
    return ((_RAMP[low] * (1 - frac) + _RAMP[low + 1] * frac) * 255).astype(np.uint8)


@lru_cache(maxsize=1)
def _ramp_table() -> np.ndarray:
    """colourise() of the 256 levels a uint8 map can take (the same float32 values as overlay computes)."""
    return colourise(np.arange(256, dtype=np.float32) / 255)


def _wrap(caption: str, font, width: float) -> list[str]:
    """The caption in lines that fit ``width`` pixels, broken between its " · " parts, else between words. By hand:
    textwrap counts characters, not the pixels of a proportional font."""
    lines: list[str] = []
    for part in caption.split(" · "):
        joined = f"{lines[-1]} · {part}" if lines else part
        if lines and font.getlength(joined) <= width:
            lines[-1] = joined
            continue
        lines.append("")
        for word in part.split(" "):
            candidate = f"{lines[-1]} {word}" if lines[-1] else word
            if lines[-1] and font.getlength(candidate) > width:
                lines.append(word)
            else:
                lines[-1] = candidate
            while font.getlength(lines[-1]) > width and len(lines[-1]) > 1:  # one word wider than a line: cut it
                cut = max((i for i in range(1, len(lines[-1])) if font.getlength(lines[-1][:i]) <= width), default=1)
                lines[-1:] = [lines[-1][:cut], lines[-1][cut:]]
    return lines


def overlay(photo: Image.Image, heat: np.ndarray, caption: str | None = None, alpha: float = 0.45,
            width: int = 448) -> Image.Image:
    """The photo with the map blended over it where the map is strong, scaled to ``width``, captioned below."""
    photo = photo.convert("RGB").resize((width, width), Image.Resampling.BICUBIC)
    heat_img = Image.fromarray((np.clip(heat, 0, 1) * 255).astype(np.uint8)).resize((width, width), Image.Resampling.BILINEAR)
    levels = np.asarray(heat_img)
    h = levels.astype(np.float32) / 255
    weight = (alpha * np.sqrt(h))[..., None]  # weak evidence stays see-through: the lesion must remain visible
    # The map has 256 levels: their colours looked up in a table (the same colours, several times faster; the
    # server draws a map for every case it receives).
    blended = np.asarray(photo, np.float32) * (1 - weight) + _ramp_table()[levels].astype(np.float32) * weight
    out = Image.fromarray(blended.clip(0, 255).astype(np.uint8))
    if caption:
        size = max(11, width // 28)
        font = ImageFont.load_default(size=size)
        lines = _wrap(caption, font, width - 16)
        line_height = int(size * 1.35)
        band = Image.new("RGB", (width, max(int(width / 9), line_height * len(lines) + 10)), (255, 255, 255))
        draw = ImageDraw.Draw(band)
        top = (band.height - line_height * len(lines)) // 2
        for i, line in enumerate(lines):
            draw.text((8, top + i * line_height + line_height // 2), line, fill=(0, 0, 0), font=font, anchor="lm")
        canvas = Image.new("RGB", (width, width + band.height), (255, 255, 255))
        canvas.paste(out, (0, 0))
        canvas.paste(band, (0, width))
        out = canvas
    return out
