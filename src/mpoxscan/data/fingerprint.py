"""Per-image fingerprints for curation: checksum, size, perceptual hashes, keypoints, a small grey copy for
aligning pictures, a CNN descriptor, and quality statistics.

Everything is computed from one decode of each file, in parallel worker processes.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

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
PHOTO_SIDE = 128  # the grey copy two pictures are aligned and compared on (data/duplicates.py)
#: ORB settings for skin close-ups: a low FAST threshold and small patches, because lesion photos are smooth and
#: small (half of MSLD is 224 px): OpenCV's defaults find fewer than 10 keypoints on many of them.
ORB = {"nfeatures": 500, "fastThreshold": 5, "edgeThreshold": 15, "patchSize": 15}


@dataclass
class Fingerprint:
    sha256: str
    error: str | None = None
    width: int = 0
    height: int = 0
    phash: np.ndarray | None = None  # bool (8, 64): the 64-bit pHash of each dihedral transform, identity first
    quadrants: np.ndarray | None = None  # bool (8, 4, 64): pHash of each quarter of each transform
    gray: np.ndarray | None = None  # uint8 (h, w), long side PHOTO_SIDE (or less: never enlarged)
    keypoints: "Keypoints | None" = None
    embedding: np.ndarray | None = None  # float16 (C,), unit length (data/embedding.py); None without an embedder
    gray_std: float = 0.0  # contrast, 0-255 scale
    colourfulness: float = 0.0  # mean |R-G| + |G-B|, 0 for a grayscale picture
    ita: float | None = None  # skin tone (Individual Typology Angle, degrees); None when too little skin


@dataclass
class Keypoints:
    """ORB keypoints of the picture and of its mirror image, in the coordinates of the grey copy (``Fingerprint.gray``);
    the mirror's in mirrored coordinates, x' = ``mirror_width`` - x (ORB is rotation-invariant, not mirror-invariant)."""

    points: np.ndarray  # float32 (n, 2)
    descriptors: np.ndarray | None  # uint8 (n, 32)
    mirror_points: np.ndarray
    mirror_descriptors: np.ndarray | None
    mirror_width: float


def keypoints(gray_work: Image.Image, photo_scale: float) -> Keypoints:
    """ORB on a contrast-equalised grey picture (CLAHE), enlarged to WORK_SIDE when smaller so that ORB's fixed patch
    finds structure in small photos; points returned at ``photo_scale`` x the working size."""
    import cv2

    w, h = gray_work.size
    if max(w, h) < WORK_SIDE:
        r = WORK_SIDE / max(w, h)
        gray_work = gray_work.resize((max(1, round(w * r)), max(1, round(h * r))), Image.Resampling.BICUBIC)
        photo_scale /= r
    a = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(4, 4)).apply(np.asarray(gray_work))
    orb = cv2.ORB_create(**ORB)

    def detect(image):
        found, desc = orb.detectAndCompute(np.ascontiguousarray(image), None)
        pts = np.float32([k.pt for k in found]).reshape(-1, 2) * photo_scale
        return pts, desc

    pts, desc = detect(a)
    mpts, mdesc = detect(a[:, ::-1])
    return Keypoints(pts, desc, mpts, mdesc, (gray_work.size[0] - 1) * photo_scale)


_embedder = None  # this process's data.embedding.Embedder, set by _init_worker


def _init_worker(onnx: bytes | None) -> None:
    global _embedder
    _embedder = None
    if onnx is not None:
        from mpoxscan.data.embedding import Embedder

        _embedder = Embedder(onnx)


#: The same 8 symmetries on a NumPy array (rows, columns), in DIHEDRAL's order.
NUMPY_DIHEDRAL = (
    lambda a: a, lambda a: a[:, ::-1], lambda a: a[::-1], lambda a: np.rot90(a, 1), lambda a: np.rot90(a, 2),
    lambda a: np.rot90(a, 3), lambda a: a.T, lambda a: np.rot90(a, 2).T,
)


def _phash_bits(pixels: np.ndarray) -> np.ndarray:
    """ImageHash's pHash of an already reduced 32 x 32 grey array (its definition: the 8 x 8 lowest DCT-II
    frequencies against their median)."""
    import scipy.fftpack

    dct = scipy.fftpack.dct(scipy.fftpack.dct(pixels.astype(np.float64), axis=0), axis=1)[:8, :8]
    return (dct > np.median(dct)).ravel()


def _reduced(image: Image.Image) -> np.ndarray:
    from imagehash import ANTIALIAS

    return np.asarray(image.convert("L").resize((32, 32), ANTIALIAS))


def dihedral_phashes(image: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """(8, 64) pHash of each symmetry of the picture and (8, 4, 64) of each quarter of each symmetry, identical to
    ImageHash's ``phash`` of the transformed pictures (a test checks it). Done by hand because the picture is reduced
    once and the symmetries are applied to the 32 x 32 reductions (the reduction is symmetric), instead of 40 calls
    that each resize: curation's fingerprints ran 10x faster in their hashing."""
    whole = _reduced(image)
    quarters = [_reduced(image.crop(box)) for box in _quarters(image.size)]
    layout = np.arange(4).reshape(2, 2)  # where each quarter lands under each symmetry
    hashes, quads = [], []
    for turn in NUMPY_DIHEDRAL:
        hashes.append(_phash_bits(turn(whole)))
        quads.append([_phash_bits(turn(quarters[q])) for q in turn(layout).ravel()])
    return np.stack(hashes), np.array(quads)


def _quarters(size: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """Top-left, top-right, bottom-left, bottom-right: a privacy bar or a sticker spoils one or two, not all four."""
    w, h = size
    return [(0, 0, w // 2, h // 2), (w // 2, 0, w, h // 2), (0, h // 2, w // 2, h), (w // 2, h // 2, w, h)]


def compute(path: Path) -> Fingerprint:
    """The fingerprint of one file; unreadable files get ``error`` set instead of raising."""
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
    hashes, quadrants = dihedral_phashes(image)
    rgb = np.asarray(image, np.float32)
    gray_work = image.convert("L")
    gray = np.asarray(gray_work, np.float32)
    colour = np.abs(rgb[..., 0] - rgb[..., 1]).mean() + np.abs(rgb[..., 1] - rgb[..., 2]).mean()
    small = gray_work.copy()
    small.thumbnail((PHOTO_SIDE, PHOTO_SIDE), Image.Resampling.BOX)
    return Fingerprint(sha256=sha, width=width, height=height, phash=hashes, quadrants=quadrants,
                       gray=np.asarray(small, np.uint8), keypoints=keypoints(gray_work, small.size[0] / gray_work.size[0]),
                       embedding=None if _embedder is None else _embedder(image),
                       gray_std=float(gray.std()), colourfulness=float(colour), ita=ita(image))


def compute_all(paths: list[Path], jobs: int | None = None, progress: bool = True,
                embedder: bytes | None = None) -> list[Fingerprint]:
    """Fingerprints of ``paths`` in order, computed by ``jobs`` processes, with a progress bar; ``embedder``: the
    ONNX bytes of data.embedding's network, to add each picture's CNN descriptor."""
    from tqdm import tqdm

    jobs = max(1, jobs or os.cpu_count() or 1)
    out: list[Fingerprint] = []
    with tqdm(total=len(paths), desc="fingerprint", unit="img", disable=not progress) as bar:
        if jobs == 1 or len(paths) < 32:  # a pool's start-up costs more than it saves on a few images
            _init_worker(embedder)
            try:
                for fp in map(compute, paths):
                    out.append(fp)
                    bar.update()
            finally:
                _init_worker(None)
        else:
            with ProcessPoolExecutor(max_workers=jobs, initializer=_init_worker, initargs=(embedder,)) as pool:
                for fp in pool.map(compute, paths, chunksize=16):
                    out.append(fp)
                    bar.update()
    return out
