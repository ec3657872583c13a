"""Exact and near-duplicate detection: checksum, perceptual-hash candidates, then verification.

Three stages, so that each does what it is good at:
1. byte-identical files share a SHA-256;
2. candidates: pairs whose pHash (ImageHash) differs in at most ``phash_radius`` of 64 bits under one of the 8
   flips/rotations, or where one quarter of the picture hashes within ``quadrant_radius`` (a black privacy bar
   over the eyes moves the whole-picture hash far, but leaves the other quarters alone); found with ball trees
   (scikit-learn) rather than by comparing every pair;
3. verification of each candidate, because in close-ups of skin many unrelated photos have close pHashes:
   - texture: the fine texture of the two pictures correlates (median over 16 tiles, so that a privacy bar over
     the eyes does not spoil it); catches re-encoded, resized, recoloured, flipped and rotated copies;
   - keypoints: ORB features (OpenCV) agree under one similarity transform (RANSAC); catches crops and zooms.
     Used only on whole-picture candidates: on arbitrary pairs ORB finds chance agreements (14 inliers measured).
The defaults come from measurements on MSLD v1 + v2 (benchmarks/curate_bench.py, README).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from mpoxscan.data.fingerprint import WORK_SIDE, Fingerprint


@dataclass(frozen=True)
class DuplicateParams:
    phash_radius: int = 16
    quadrant_radius: int = 6
    texture_min: float = 0.5
    keypoint_min_inliers: int = 12


@dataclass(frozen=True)
class Match:
    i: int
    j: int
    method: str  # "identical", "texture" or "keypoints"
    phash_distance: int
    score: float  # texture correlation or keypoint inliers; 1.0 for identical files

    def describe(self) -> str:
        if self.method == "identical":
            return "identical"
        score = f"{self.score:.3f}" if self.method == "texture" else f"{int(self.score)} inliers"
        return f"{self.method}={score}" + (f" (pHash d={self.phash_distance})" if self.phash_distance >= 0 else "")


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


def candidate_pairs(phashes: np.ndarray, quadrants: np.ndarray | None, params: DuplicateParams) -> dict[tuple[int, int], int]:
    """{(i, j): whole-picture pHash distance} for i < j that are within the pHash radius, or whose quarters are
    within the quadrant radius under the same flip/rotation."""
    if len(phashes) < 2:
        return {}
    pairs = _within(phashes[:, 0], phashes, params.phash_radius)
    if quadrants is not None:
        for q in range(quadrants.shape[2]):
            pairs |= _within(quadrants[:, 0, q], quadrants[:, :, q], params.quadrant_radius)
    return {(i, j): min(_distance(phashes, i, j), _distance(phashes, j, i)) for i, j in sorted(pairs)}


def _dihedral(a: np.ndarray) -> list[np.ndarray]:
    return [a, a[:, ::-1], a[::-1], np.rot90(a, 1), np.rot90(a, 2), np.rot90(a, 3), a.T, np.rot90(a, 2).T]


def _tiles(a: np.ndarray, grid: int = 4) -> np.ndarray:
    """(S, S) -> (grid*grid, tile pixels), each tile centred and scaled to unit norm."""
    s = a.shape[0] // grid
    t = a.astype(np.float32).reshape(grid, s, grid, s).transpose(0, 2, 1, 3).reshape(grid * grid, s * s)
    t = t - t.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(t, axis=1, keepdims=True)
    return np.divide(t, norm, out=np.zeros_like(t), where=norm > 1e-6)


def texture_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Best over the 8 flips/rotations of the median tile correlation of two texture maps (1 = same picture)."""
    tb = _tiles(b)
    return max(float(np.median((_tiles(np.ascontiguousarray(x)) * tb).sum(axis=1))) for x in _dihedral(a))


@lru_cache(maxsize=4096)
def _orb_features(path: str, mirror: bool):
    import cv2
    from PIL import Image

    from mpoxscan.images import load_image

    image = load_image(path, min_side=WORK_SIDE).convert("L")
    image.thumbnail((WORK_SIDE, WORK_SIDE), Image.Resampling.BOX)
    if mirror:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    keypoints, descriptors = cv2.ORB_create(nfeatures=500).detectAndCompute(np.asarray(image), None)
    points = np.float32([k.pt for k in keypoints]) if keypoints else np.zeros((0, 2), np.float32)
    return points, descriptors


def keypoint_inliers(path_a: Path, path_b: Path) -> int:
    """ORB matches (ratio test) that agree with one similarity transform (RANSAC); mirrored copies included."""
    import cv2

    best = 0
    pb, db = _orb_features(str(path_b), False)
    if db is None or len(db) < 8:
        return 0
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
    for mirror in (False, True):
        pa, da = _orb_features(str(path_a), mirror)
        if da is None or len(da) < 8:
            continue
        good = [m[0] for m in matcher.knnMatch(da, db, k=2) if len(m) == 2 and m[0].distance < 0.8 * m[1].distance]
        if len(good) < 6:
            continue
        src = pa[[m.queryIdx for m in good]]
        dst = pb[[m.trainIdx for m in good]]
        transform, mask = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=4.0)
        if transform is None:
            continue
        scale = float(np.sqrt(abs(np.linalg.det(transform[:, :2]))))
        if 0.4 < scale < 2.5:  # a copy is not blown up or shrunk beyond that
            best = max(best, int(mask.sum()))
    return best


def verify(i: int, j: int, phash_distance: int, paths: list[Path], prints: list[Fingerprint],
           params: DuplicateParams) -> Match | None:
    """Whether candidate pair (i, j) is the same picture: texture first (cheap), then keypoints (crops, zooms)."""
    score = texture_similarity(prints[i].texture, prints[j].texture)
    if score >= params.texture_min:
        return Match(i, j, "texture", phash_distance, round(score, 3))
    if phash_distance > params.phash_radius:
        return None
    inliers = keypoint_inliers(paths[i], paths[j])
    if inliers >= params.keypoint_min_inliers:
        return Match(i, j, "keypoints", phash_distance, float(inliers))
    return None


def find_duplicates(paths: list[Path], prints: list[Fingerprint], params: DuplicateParams,
                    active: list[int] | None = None, progress: bool = True) -> tuple[list[Match], int]:
    """All duplicate pairs among the ``active`` images (default: every readable one), and the number of candidate
    pairs that were verified."""
    from tqdm import tqdm

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
    candidates = candidate_pairs(np.stack([prints[k].phash for k in ok]), np.stack([prints[k].quadrants for k in ok]), params)
    todo = sorted(((ok[a], ok[b]), d) for (a, b), d in candidates.items() if (ok[a], ok[b]) not in identical)
    for (i, j), d in tqdm(todo, desc="verify pairs", unit="pair", disable=not progress):
        if match := verify(i, j, d, paths, prints, params):
            matches.append(match)
    _orb_features.cache_clear()
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
