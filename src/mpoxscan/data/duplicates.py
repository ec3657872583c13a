"""Exact and near-duplicate detection: checksum, candidate pairs, then verification by aligning the two pictures.

Public mpox image sets are web re-hosts of the same photos, cropped (often tightly), recoloured, rotated,
watermarked, squashed and re-encoded. Three stages, so that each does what it is good at:
1. byte-identical files share a SHA-256;
2. candidates, from two searches:
   - pHash (ImageHash) within ``phash_radius`` of 64 bits under one of the 8 flips/rotations, or one quarter within
     ``quadrant_radius`` (a privacy bar spoils one quarter, not all four); ball trees (scikit-learn);
   - each picture's ``neighbours`` nearest pictures by a CNN descriptor (data/embedding.py), which survives the
     crops and recolours that move a pHash far;
3. verification of each candidate by alignment, because in close-ups of skin many unrelated photos are close by
   either search: the pictures are aligned (the 8 whole-picture flips/rotations; or the similarity transform that
   ORB keypoint matches agree on, by RANSAC, refined by OpenCV's ECC), and their band-passed grey levels are
   compared tile by tile over the overlap. A copy agrees almost everywhere (median tile correlation 0.8-1.0 for
   crops, recolours, watermarks; 0.4-0.6 for heavy re-encoding); unrelated photos that share only a frame, a
   caption or an atlas watermark agree on a few tiles, not the median.
The thresholds come from the check set of benchmarks/dedup_bench.py (results/dedup.md): altered copies of real
photos mixed with unrelated ones.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mpoxscan.data.fingerprint import Fingerprint


@dataclass(frozen=True)
class DuplicateParams:
    phash_radius: int = 12
    quadrant_radius: int = 6
    neighbours: int = 6  # nearest pictures by CNN descriptor verified as candidates (0: pHash candidates only)
    match_min: float = 0.4  # median tile correlation of the aligned pictures that makes a copy
    min_inliers: int = 6  # keypoint matches agreeing on one transform, to try that alignment


@dataclass(frozen=True)
class Match:
    i: int
    j: int
    method: str  # "identical", "aligned" (whole pictures, flipped or turned) or "keypoints" (crops, zooms)
    phash_distance: int  # -1 when the pair was proposed by its CNN descriptors alone
    score: float  # median tile correlation after alignment; 1.0 for identical files

    def describe(self) -> str:
        if self.method == "identical":
            return "identical"
        return f"{self.method}={self.score:.3f}" + (f" (pHash d={self.phash_distance})" if self.phash_distance >= 0 else "")


def _within(index_hashes: np.ndarray, queries: np.ndarray, radius: int) -> set[tuple[int, int]]:
    """Pairs (i < j) where some query hash of i lies within ``radius`` bits of j's index hash (ball tree search)."""
    from sklearn.neighbors import NearestNeighbors

    tree = NearestNeighbors(metric="hamming", algorithm="ball_tree").fit(index_hashes)
    found: set[tuple[int, int]] = set()
    for t in range(queries.shape[1]):
        for i, js in enumerate(tree.radius_neighbors(queries[:, t], radius=(radius + 0.5) / 64, return_distance=False)):
            found.update((min(i, j), max(i, j)) for j in js.tolist() if j != i)
    return found


def _distance(hashes: np.ndarray, i: int, j: int) -> int:
    """Smallest Hamming distance between any transform of i and j's identity (hashes: (n, T, 64))."""
    return int(np.min(np.count_nonzero(hashes[i] != hashes[j, 0], axis=-1)))


def candidate_pairs(phashes: np.ndarray, quadrants: np.ndarray | None, params: DuplicateParams,
                    embeddings: np.ndarray | None = None,
                    apart: np.ndarray | None = None) -> dict[tuple[int, int], int]:
    """{(i, j): whole-picture pHash distance, or -1 for a pair only the CNN descriptors propose} for i < j.
    ``apart`` (a mask): pictures whose own nearest-descriptor lists search all pictures, but which take no place in
    the others' lists, so that adding them leaves every candidate pair among the others as it was (the pHash
    searches have a radius, not a count, and need no such care)."""
    if len(phashes) < 2:
        return {}
    pairs = _within(phashes[:, 0], phashes, params.phash_radius)
    if quadrants is not None:
        for q in range(quadrants.shape[2]):
            pairs |= _within(quadrants[:, 0, q], quadrants[:, :, q], params.quadrant_radius)
    out = {(i, j): min(_distance(phashes, i, j), _distance(phashes, j, i)) for i, j in sorted(pairs)}
    if embeddings is not None and params.neighbours > 0:
        from mpoxscan.data.embedding import nearest

        if apart is None or not apart.any():
            lists = list(enumerate(nearest(embeddings, params.neighbours)))
        else:
            rest, mine = np.flatnonzero(~apart), np.flatnonzero(apart)
            lists = [(rest[a], rest[row]) for a, row in enumerate(nearest(embeddings[rest], params.neighbours))]
            lists += list(zip(mine, nearest(embeddings, params.neighbours, queries=mine)))
        for i, row in lists:
            for j in row.tolist():
                out.setdefault((min(int(i), j), max(int(i), j)), -1)
    return out


# --- verification: align, then compare -------------------------------------------------------------------------
# Written by hand (with OpenCV's pieces) because no library offers a copy check that survives crops, recolours and
# captions at once: perceptual hashes fail on crops, and keypoint counts alone match atlas watermarks and frames.

TILE = 12  # pixels of the grey copy (long side 128) per compared tile
MIN_TILES = 6  # fewer informative tiles in the overlap: no verdict from the picture itself
MIN_OVERLAP = 0.2  # ... or an overlap smaller than this share of the compared picture: a corner agreeing by chance
TILE_SIGNAL = 1.0  # a tile counts when either picture's band-passed grey levels vary this much (0-255 scale)
TILE_FLAT = 0.3  # ... and correlates as 0 when one of the two is flatter than this (structure against none)


def _band(gray: np.ndarray) -> np.ndarray:
    """Band-pass (difference of Gaussians): the lesions' and the skin's structure, without the lighting or the
    finest grain, which re-encoding and resizing destroy."""
    import cv2

    return cv2.GaussianBlur(gray, (0, 0), 0.8) - cv2.GaussianBlur(gray, (0, 0), 2.5)


def agreement(a: np.ndarray, b: np.ndarray, transform: np.ndarray, refine: bool = False) -> float:
    """Median tile correlation of two grey pictures once ``transform`` (2x3, a's pixels -> b's) aligns a onto b,
    compared in the frame of the coarser one; -1 when the overlap has too few informative tiles."""
    import cv2

    a, b = a.astype(np.float32), b.astype(np.float32)
    scale = float(np.sqrt(abs(np.linalg.det(transform[:, :2]))))
    if scale > 1.0:  # compare in the coarser frame: enlarging a copy cannot restore its detail
        a, b, transform, scale = b, a, cv2.invertAffineTransform(transform), 1.0 / scale
    h, w = b.shape
    ones = np.ones_like(a)
    if refine:
        warp = cv2.invertAffineTransform(transform).astype(np.float32)
        mask = (cv2.warpAffine(ones, transform, (w, h), flags=cv2.INTER_NEAREST) > 0).astype(np.uint8)
        try:
            _, warp = cv2.findTransformECC(b, a, warp, cv2.MOTION_AFFINE,
                                           (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-4), mask, 3)
            transform = cv2.invertAffineTransform(warp)
        except cv2.error:  # ECC did not converge: keep the keypoints' transform
            pass
    sigma = 0.6 * np.sqrt(max(1.0 / (scale * scale) - 1.0, 0.0))  # anti-aliasing before shrinking
    source = cv2.GaussianBlur(a, (0, 0), sigma) if sigma > 0.2 else a
    warped = cv2.warpAffine(source, transform, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    valid = cv2.warpAffine(ones, transform, (w, h), flags=cv2.INTER_NEAREST) > 0
    valid = cv2.erode(valid.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0  # the band-pass reaches ~3 px
    ny, nx = h // TILE, w // TILE
    if ny == 0 or nx == 0:
        return -1.0

    def tiles(x: np.ndarray) -> np.ndarray:  # (ny, nx): each tile's sum over the valid pixels
        return x[:ny * TILE, :nx * TILE].reshape(ny, TILE, nx, TILE).sum(axis=(1, 3))

    m = valid.astype(np.float32)
    pa, pb = _band(warped) * m, _band(b) * m
    n = tiles(m)
    use = n >= 0.95 * TILE * TILE
    if use.sum() < max(MIN_TILES, MIN_OVERLAP * ny * nx):
        return -1.0
    n = np.maximum(n, 1.0)
    mean_a, mean_b = tiles(pa) / n, tiles(pb) / n
    var_a = np.maximum(tiles(pa * pa) / n - mean_a ** 2, 0.0)
    var_b = np.maximum(tiles(pb * pb) / n - mean_b ** 2, 0.0)
    cov = tiles(pa * pb) / n - mean_a * mean_b
    sa, sb = np.sqrt(var_a), np.sqrt(var_b)
    use &= np.maximum(sa, sb) >= TILE_SIGNAL
    both = np.minimum(sa, sb) >= TILE_FLAT
    corr = np.where(both, cov / np.maximum(sa * sb, 1e-12), 0.0)[use]
    return float(np.median(corr)) if len(corr) >= MIN_TILES else -1.0


def whole_picture_transforms(a_shape: tuple[int, int], b_shape: tuple[int, int]) -> list[np.ndarray]:
    """The 8 maps of picture a onto picture b as a whole (each flip/rotation, stretched to b's size)."""
    import cv2

    (ha, wa), (hb, wb) = a_shape, b_shape
    src = np.float32([[0, 0], [wa, 0], [0, ha]])
    corner = {"tl": (0, 0), "tr": (wb, 0), "bl": (0, hb), "br": (wb, hb)}
    images_of = [("tl", "tr", "bl"), ("tr", "tl", "br"), ("bl", "br", "tl"), ("br", "bl", "tr"),
                 ("tl", "bl", "tr"), ("tr", "br", "tl"), ("bl", "tl", "br"), ("br", "tr", "bl")]
    return [cv2.getAffineTransform(src, np.float32([corner[p], corner[q], corner[r]])) for p, q, r in images_of]


def keypoint_transforms(a: Fingerprint, b: Fingerprint, min_inliers: int):
    """Similarity transforms (a's grey copy -> b's) that ORB matches agree on, directly then mirrored, each with the
    number of agreeing matches; a copy is not enlarged or shrunk beyond 4x. A generator: the mirror image is matched
    only when the direct transform did not verify."""
    import cv2

    ka, kb = a.keypoints, b.keypoints
    if ka is None or kb is None or kb.descriptors is None or len(kb.descriptors) < 8:
        return
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
    for points, descriptors, mirrored in ((ka.points, ka.descriptors, False),
                                          (ka.mirror_points, ka.mirror_descriptors, True)):
        if descriptors is None or len(descriptors) < 8:
            continue
        good = [m[0] for m in matcher.knnMatch(descriptors, kb.descriptors, k=2)
                if len(m) == 2 and m[0].distance < 0.8 * m[1].distance]
        if len(good) < min_inliers:
            continue
        src = points[[m.queryIdx for m in good]]
        dst = kb.points[[m.trainIdx for m in good]]
        transform, mask = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=2.0)
        if transform is None or int(mask.sum()) < min_inliers:
            continue
        if not 0.25 < float(np.sqrt(abs(np.linalg.det(transform[:, :2])))) < 4.0:
            continue
        if mirrored:  # the points were found on the mirror image: x' = mirror_width - x
            flip = np.array([[-1.0, 0.0, ka.mirror_width], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
            transform = (np.vstack([transform, [0.0, 0.0, 1.0]]) @ flip)[:2]
        yield transform.astype(np.float32), int(mask.sum())


def verify(i: int, j: int, phash_distance: int, prints: list[Fingerprint], params: DuplicateParams) -> Match | None:
    """Whether candidate pair (i, j) is the same picture: whole-picture alignments first for pHash candidates
    (cheap), then the keypoints' alignment (crops, zooms, turns)."""
    a, b = prints[i], prints[j]
    if a.gray is None or b.gray is None:
        return None
    if phash_distance >= 0:
        best = max(agreement(a.gray, b.gray, t) for t in whole_picture_transforms(a.gray.shape, b.gray.shape))
        if best >= params.match_min:
            return Match(i, j, "aligned", phash_distance, round(best, 3))
    for transform, _inliers in keypoint_transforms(a, b, params.min_inliers):
        score = agreement(a.gray, b.gray, transform, refine=True)
        if score >= params.match_min:
            return Match(i, j, "keypoints", phash_distance, round(score, 3))
    return None


_shared: dict = {}  # the fingerprints and settings, inherited by forked verification workers


def _verify_chunk(pairs: list[tuple[int, int, int]]) -> list[Match]:
    import cv2

    cv2.setNumThreads(1)
    prints, params = _shared["prints"], _shared["params"]
    return [m for i, j, d in pairs if (m := verify(i, j, d, prints, params)) is not None]


def _verify_all(todo: list[tuple[int, int, int]], prints: list[Fingerprint], params: DuplicateParams,
                jobs: int, progress: bool) -> list[Match]:
    """Verify candidate pairs in ``jobs`` forked processes (they share the fingerprints without copying them)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm

    _shared.update(prints=prints, params=params)
    chunks = [todo[k:k + 64] for k in range(0, len(todo), 64)]
    out: list[Match] = []
    try:
        with tqdm(total=len(todo), desc="verify pairs", unit="pair", disable=not progress) as bar:
            if jobs == 1 or len(todo) < 256 or "fork" not in multiprocessing.get_all_start_methods():
                for chunk in chunks:
                    out += _verify_chunk(chunk)
                    bar.update(len(chunk))
            else:
                with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork")) as pool:
                    for chunk, found in zip(chunks, pool.map(_verify_chunk, chunks)):
                        out += found
                        bar.update(len(chunk))
    finally:
        _shared.clear()
    return out


def find_duplicates(paths: list[Path], prints: list[Fingerprint], params: DuplicateParams,
                    active: list[int] | None = None, progress: bool = True,
                    jobs: int | None = None, apart: Collection[int] = ()) -> tuple[list[Match], int]:
    """All duplicate pairs among the ``active`` images (default: every readable one), and the number of candidate
    pairs that were verified. ``apart``: images matched against all the others without changing how those are
    matched to one another (candidate_pairs)."""
    ok = [k for k in (range(len(prints)) if active is None else active) if prints[k].error is None]
    matches: list[Match] = []
    by_sha: dict[str, list[int]] = defaultdict(list)
    for k in ok:
        by_sha[prints[k].sha256].append(k)
    identical = set()
    for members in by_sha.values():
        for other in members[1:]:
            matches.append(Match(members[0], other, "identical", 0, 1.0))
            identical.add((members[0], other))
    if not ok:
        return matches, 0
    embeddings = None
    if all(prints[k].embedding is not None for k in ok):
        embeddings = np.stack([prints[k].embedding for k in ok])
    apart = set(apart)
    candidates = candidate_pairs(np.stack([prints[k].phash for k in ok]), np.stack([prints[k].quadrants for k in ok]),
                                 params, embeddings, np.array([k in apart for k in ok], dtype=bool))
    todo = sorted((ok[a], ok[b], d) for (a, b), d in candidates.items() if (ok[a], ok[b]) not in identical)
    jobs = max(1, jobs or os.cpu_count() or 1)
    matches += _verify_all(todo, prints, params, jobs, progress)
    return matches, len(todo)


def clusters(n: int, matches: list[Match]) -> np.ndarray:
    """Connected components of the duplicate graph: label per image (singletons get their own)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    rows = [m.i for m in matches]
    cols = [m.j for m in matches]
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return labels
