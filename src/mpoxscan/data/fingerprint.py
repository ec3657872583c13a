"""Per-image fingerprints for curation: checksum, size, perceptual hashes, texture map and quality statistics.

Everything is computed from one decode of each file, in parallel worker processes.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from mpoxscan.data.skin import ita
from mpoxscan.errors import ImageError, ImageShapeError
from mpoxscan.images import load_image

#: The 8 symmetries of the square (identity, flips, 90-degree rotations): augmentation copies use them.
DIHEDRAL = (
    None,
    Image.Transpose.FLIP_LEFT_RIGHT,
    Image.Transpose.FLIP_TOP_BOTTOM,
    Image.Transpose.ROTATE_90,
    Image.Transpose.ROTATE_180,
    Image.Transpose.ROTATE_270,
    Image.Transpose.TRANSPOSE,
    Image.Transpose.TRANSVERSE,
)
WORK_SIDE = 256  # images are analysed at this size: plenty for hashes, fast for 12-megapixel photos
TEXTURE_SIDE = 64


@dataclass
class Fingerprint:
    sha256: str
    error: str | None = None
    width: int = 0
    height: int = 0
    phash: np.ndarray | None = None  # bool (8, 64): the 64-bit pHash of each dihedral transform, identity first
    quadrants: np.ndarray | None = None  # bool (8, 4, 64): pHash of each quarter of each transform
    texture: np.ndarray | None = None  # float16 (64, 64): grayscale minus its blur, the fine texture
    gray_std: float = 0.0  # contrast, 0-255 scale
    colourfulness: float = 0.0  # mean |R-G| + |G-B|, 0 for a grayscale picture
    ita: float | None = None  # skin tone (Individual Typology Angle, degrees); None when too little skin


def texture_map(image: Image.Image) -> np.ndarray:
    """High-pass 64x64 grayscale: the fine texture (pores, grain) that a re-encoded copy keeps and an unrelated
    photo of similar skin does not. Hand-written because no hashing library offers an occlusion-robust check."""
    gray = image.convert("L").resize((TEXTURE_SIDE, TEXTURE_SIDE), Image.Resampling.BOX)
    blur = gray.filter(ImageFilter.GaussianBlur(1.5))
    return (np.asarray(gray, np.float32) - np.asarray(blur, np.float32)).astype(np.float16)


def _quarters(size: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """Top-left, top-right, bottom-left, bottom-right: a privacy bar or a sticker spoils one or two, not all four."""
    w, h = size
    return [(0, 0, w // 2, h // 2), (w // 2, 0, w, h // 2), (0, h // 2, w // 2, h), (w // 2, h // 2, w, h)]


def compute(path: Path) -> Fingerprint:
    """The fingerprint of one file; unreadable files get ``error`` set instead of raising."""
    import imagehash

    try:
        data = path.read_bytes()
    except OSError as exc:
        return Fingerprint(sha256="", error=f"cannot read file ({exc.strerror or exc})")
    sha = hashlib.sha256(data).hexdigest()
    try:
        image = load_image(data, min_side=WORK_SIDE, name=path.name)
    except ImageShapeError as exc:  # refused for its shape: the size is known, and the quality filter names it
        return Fingerprint(sha256=sha, error=str(exc).removeprefix(f"{path.name}: "), width=exc.size[0],
                           height=exc.size[1])
    except ImageError as exc:
        return Fingerprint(sha256=sha, error=str(exc).removeprefix(f"{path.name}: "))
    width, height = image.info["source_size"]
    image.thumbnail((WORK_SIDE, WORK_SIDE), Image.Resampling.BOX)
    turned = [image if t is None else image.transpose(t) for t in DIHEDRAL]
    hashes = np.stack([imagehash.phash(im).hash.ravel() for im in turned])
    quadrants = np.stack([[imagehash.phash(im.crop(box)).hash.ravel() for box in _quarters(im.size)] for im in turned])
    rgb = np.asarray(image, np.float32)
    gray = np.asarray(image.convert("L"), np.float32)
    colour = np.abs(rgb[..., 0] - rgb[..., 1]).mean() + np.abs(rgb[..., 1] - rgb[..., 2]).mean()
    return Fingerprint(sha256=sha, width=width, height=height, phash=hashes, quadrants=quadrants, texture=texture_map(image),
                       gray_std=float(gray.std()), colourfulness=float(colour), ita=ita(image))


def compute_all(paths: list[Path], jobs: int | None = None, progress: bool = True) -> list[Fingerprint]:
    """Fingerprints of ``paths`` in order, computed by ``jobs`` processes, with a progress bar."""
    from tqdm import tqdm

    jobs = max(1, jobs or os.cpu_count() or 1)
    out: list[Fingerprint] = []
    with tqdm(total=len(paths), desc="fingerprint", unit="img", disable=not progress) as bar:
        if jobs == 1 or len(paths) < 32:  # a pool's start-up costs more than it saves on a few images
            results = map(compute, paths)
            for fp in results:
                out.append(fp)
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=jobs) as pool:
                for fp in pool.map(compute, paths, chunksize=16):
                    out.append(fp)
                    bar.update()
    return out
