"""Measure `mpoxscan curate` on the real MSLD v1 + v2 pool, and how it scales.

Writes benchmarks/results/curate.json and curate.md (quoted by the README), plus contact sheets to check by eye:
  - curate_cross_source.png: every v1 -> v2 match that is not a byte-identical file;
  - curate_near_misses.png: the candidate pairs that came closest to being matched, but were not.

    .venv/bin/python benchmarks/curate_bench.py [--data ../shared/data] [--skip-scaling]
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance

from mpoxscan.data.curate import CurateOptions, curate
from mpoxscan.data.duplicates import (DuplicateParams, Match, candidate_pairs, keypoint_inliers,
                                      texture_similarity, verify)
from mpoxscan.data.fingerprint import compute, compute_all
from mpoxscan.data.report import contact_sheet
from mpoxscan.data.sources import Source

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def real_pool(data: Path) -> tuple[dict, object]:
    sources = [
        Source("msld-v2", data / "msld-v2", r"^([A-Z]+_\d+)_", priority=1),
        Source("msld-v1", data / "msld-v1", r"^(N?M\d+)_", {"Others": ("Chickenpox", "Measles")}),
    ]
    start = time.perf_counter()
    result = curate(sources, CurateOptions(n_folds=10, seed=0, progress=False))
    seconds = time.perf_counter() - start
    rows = result.rows
    cross = [(rep, dup, m) for rep, dup, m in result.pairs if rows[rep].source != rows[dup].source]
    near_cross = [(a, b, m) for a, b, m in cross if m.method != "identical"]
    contact_sheet(rows, near_cross, RESULTS / "curate_cross_source.png", "v1 <-> v2 matches that are not byte-identical",
                  limit=60, columns=4)
    v1_matched = result.report["duplicates"]["files_with_a_copy_in_another_source"].get("msld-v1 -> msld-v2", 0)
    summary = {
        "files": len(rows),
        "seconds_end_to_end": round(seconds, 2),
        "by_status": result.report["counts"]["by_status"],
        "v1_files": sum(r.source == "msld-v1" for r in rows),
        "v1_files_with_a_copy_in_v2": v1_matched,
        "cross_source_pairs": len(cross),
        "cross_source_pairs_byte_identical": sum(m.method == "identical" for _, _, m in cross),
        "cross_source_pairs_not_byte_identical": len(near_cross),
        "cross_source_not_identical_by_method": {k: sum(m.method == k for _, _, m in near_cross) for k in ("texture", "keypoints")},
        "cross_source_not_identical_pixel_equal": sum(m.phash_distance == 0 and m.score >= 0.99 for _, _, m in near_cross),
        "within_source_pairs": len(result.pairs) - len(cross),
        "conflicts": len(result.report["conflicts"]),
        "candidate_pairs_verified": result.report["duplicates"]["candidate_pairs_verified"],
        "groups_joined": len(result.report["groups"]["joined_by_shared_pictures"]),
        "near_cross_pairs": [f"{rows[a].source}/{rows[a].relpath} = {rows[b].source}/{rows[b].relpath}: {m.describe()}"
                             for a, b, m in near_cross if not (m.phash_distance == 0 and m.score >= 0.99)],
    }
    return summary, result


def near_misses(data: Path, result, limit: int = 24) -> dict:
    """Candidate pairs (pHash within the radius) that verification refused, ranked by how close they came."""
    rows = result.rows
    paths = [Path(r.path) for r in rows]
    prints = compute_all(paths, progress=False)
    ok = [k for k, fp in enumerate(prints) if fp.error is None]
    params = DuplicateParams()
    cands = candidate_pairs(np.stack([prints[k].phash for k in ok]), np.stack([prints[k].quadrants for k in ok]), params)
    linked = {r.path: (r.duplicate_of or r.path) for r in rows}
    scored = []
    started = time.perf_counter()
    for (a, b), d in cands.items():
        i, j = ok[a], ok[b]
        if linked[rows[i].path] == linked[rows[j].path]:
            continue
        tex = texture_similarity(prints[i].texture, prints[j].texture)
        inl = keypoint_inliers(paths[i], paths[j])
        scored.append((inl / params.keypoint_min_inliers + tex / params.texture_min, i, j, d, tex, inl))
    seconds = time.perf_counter() - started
    scored.sort(reverse=True)
    top = scored[:limit]
    pairs = [(i, j, Match(i, j, "keypoints", d, float(inl))) for _, i, j, d, tex, inl in top]
    contact_sheet(rows, pairs, RESULTS / "curate_near_misses.png", "Closest refused candidates (not merged)", limit=limit, columns=4)
    return {
        "refused_candidates": len(scored),
        "seconds_to_verify_them": round(seconds, 2),
        "max_texture_among_refused": round(max((s[4] for s in scored), default=0.0), 3),
        "max_inliers_among_refused": max((s[5] for s in scored), default=0),
        "closest_refused": [f"{rows[i].source}/{rows[i].relpath} ~ {rows[j].source}/{rows[j].relpath}: texture {tex:.3f}, "
                            f"{inl} inliers, pHash d={d}" for _, i, j, d, tex, inl in top],
    }


def unmatched_v1_exhaustive(result, top: int = 12) -> dict:
    """Recall check that does not trust the candidate search: every v1 image left without a v2 copy is compared
    by keypoints with every v2 image. The best-scoring pairs go on a contact sheet to be checked by eye."""
    rows = result.rows
    linked = {r.path: (r.duplicate_of or r.path) for r in rows}
    v2_keys = {linked[r.path] for r in rows if r.source == "msld-v2"}
    lonely = [k for k, r in enumerate(rows) if r.source == "msld-v1" and r.status != "rejected" and linked[r.path] not in v2_keys]
    v2 = [k for k, r in enumerate(rows) if r.source == "msld-v2"]
    start = time.perf_counter()
    best = []
    for a in lonely:
        inl, b = max((keypoint_inliers(Path(rows[a].path), Path(rows[b].path)), b) for b in v2)
        best.append((inl, a, b))
    best.sort(reverse=True)
    pairs = [(a, b, Match(a, b, "keypoints", -1, float(inl))) for inl, a, b in best[:top]]
    contact_sheet(rows, pairs, RESULTS / "curate_unmatched_v1.png", "v1 images without a v2 copy, and their best keypoint match in v2",
                  limit=top, columns=4)
    return {"v1_without_v2_copy": len(lonely), "pairs_compared": len(lonely) * len(v2),
            "seconds": round(time.perf_counter() - start, 1),
            "best_pairs": [f"{rows[a].relpath} ~ {rows[b].relpath}: {inl} inliers" for inl, a, b in best[:top]]}


def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _bar(img: Image.Image) -> Image.Image:
    out = img.copy()
    w, h = out.size
    ImageDraw.Draw(out).rectangle((w * 0.25, h * 0.2, w * 0.75, h * 0.3), fill="black")
    return out


def _crop(img: Image.Image, frac: float, one_side: bool = False) -> Image.Image:
    w, h = img.size
    dx, dy = int(w * frac), int(h * frac)
    return img.crop((dx, dy, w, h)) if one_side else img.crop((dx // 2, dy // 2, w - dx // 2, h - dy // 2))


AUGMENTATIONS = {
    "re-encoded JPEG q50": lambda im: _jpeg(im, 50),
    "resized to 50 %": lambda im: im.resize((im.width // 2, im.height // 2)),
    "mirrored": lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
    "rotated 90": lambda im: im.transpose(Image.Transpose.ROTATE_90),
    "brightness +15 %": lambda im: ImageEnhance.Brightness(im).enhance(1.15),
    "saturation +30 %": lambda im: ImageEnhance.Color(im).enhance(1.3),
    "privacy bar (5 % of the area)": _bar,
    "centre crop 5 %": lambda im: _crop(im, 0.05),
    "one-side crop 5 %": lambda im: _crop(im, 0.05, True),
    "centre crop 10 %": lambda im: _crop(im, 0.10),
    "rotated 90 + crop 5 % + JPEG q70": lambda im: _jpeg(_crop(im.transpose(Image.Transpose.ROTATE_90), 0.05), 70),
}


def synthetic_recall(data: Path, result, n: int = 100, seed: int = 0) -> dict:
    """Recall per kind of copy: each kept v2 photo and its altered copy, through the same candidate + verify rule."""
    import tempfile

    rng = np.random.default_rng(seed)
    kept = [r for r in result.rows if r.status == "kept" and r.source == "msld-v2"]
    chosen = [kept[k] for k in rng.choice(len(kept), size=min(n, len(kept)), replace=False)]
    params = DuplicateParams()
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, alter in AUGMENTATIONS.items():
            found = missed_by_hash = 0
            for k, row in enumerate(chosen):
                original = Image.open(row.path).convert("RGB")
                copy_path = Path(tmp) / f"copy{k}.png"
                alter(original).save(copy_path)
                prints = [compute(Path(row.path)), compute(copy_path)]
                cands = candidate_pairs(np.stack([fp.phash for fp in prints]), np.stack([fp.quadrants for fp in prints]), params)
                if not cands:
                    missed_by_hash += 1
                elif verify(0, 1, cands[(0, 1)], [Path(row.path), copy_path], prints, params):
                    found += 1
            out[name] = {"recall": round(found / len(chosen), 3), "missed_by_the_candidate_search": missed_by_hash,
                         "missed_by_verification": len(chosen) - found - missed_by_hash}
    return {"photos": len(chosen), "kinds": out}


def scaling(result, refused_seconds: float, refused_pairs: int) -> dict:
    """How the cost grows with the pool, from measurements on the real pool.

    Fingerprints are linear in the number of images. The near-duplicate search finds candidates with a ball tree,
    but in close-ups of skin many unrelated photos lie within the pHash radius, so the number of candidate pairs
    (and the verification work) grows with the square of the pool: we measure that fraction here and project.
    """
    rows = result.rows
    prints = compute_all([Path(r.path) for r in rows], progress=False)
    hashes = np.stack([fp.phash for fp in prints if fp.error is None])  # (n, 8, 64)
    packed = np.packbits(hashes, axis=2).view(">u8")[..., 0]  # (n, 8) 64-bit words
    dist = np.full((len(packed), len(packed)), 64, dtype=np.int64)
    for t in range(packed.shape[1]):
        dist = np.minimum(dist, np.bitwise_count(packed[:, t, None] ^ packed[None, :, 0]).astype(np.int64))
    dist = np.minimum(dist, dist.T)
    iu = np.triu_indices(len(packed), 1)
    linked = {r.path: (r.duplicate_of or r.path) for r in rows}
    keys = np.array([linked[r.path] for r, fp in zip(rows, prints) if fp.error is None])
    unrelated = keys[iu[0]] != keys[iu[1]]
    d = dist[iu][unrelated]
    per_pair_ms = 1000 * refused_seconds / max(1, refused_pairs)
    out = {"unrelated_pairs": int(unrelated.sum()), "verify_ms_per_pair": round(per_pair_ms, 2), "radius": {}}
    for radius in (8, 10, 12, 16):
        frac = float((d <= radius).mean())
        proj = {}
        for n in (10_000, 100_000):
            pairs = frac * n * (n - 1) / 2
            proj[str(n)] = {"candidate_pairs": int(pairs), "verify_hours_one_core": round(pairs * per_pair_ms / 3.6e6, 2)}
        out["radius"][str(radius)] = {"fraction_of_unrelated_pairs_within": round(frac, 6), "projection": proj}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data")
    parser.add_argument("--skip-scaling", action="store_true")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)

    summary, result = real_pool(args.data)
    per_image_ms = 1000 * summary["seconds_end_to_end"] / summary["files"]
    report = {
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores, Python {platform.python_version()}",
        "real_pool": summary,
        "near_misses": near_misses(args.data, result),
        "unmatched_v1_exhaustive": unmatched_v1_exhaustive(result),
        "synthetic_copies": synthetic_recall(args.data, result),
        "per_image_ms_end_to_end": round(per_image_ms, 2),
        "fingerprint_bytes_per_image": 8 * 64 + 64 * 64 * 2 + 200,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if not args.skip_scaling:
        nm = report["near_misses"]
        report["scaling"] = scaling(result, nm["seconds_to_verify_them"], nm["refused_candidates"])
    (RESULTS / "curate.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "curate.md").write_text(markdown(report))
    print(markdown(report))


def markdown(r: dict) -> str:
    pool, near, ex = r["real_pool"], r["near_misses"], r["unmatched_v1_exhaustive"]
    lines = [
        "# Curate benchmark (benchmarks/curate_bench.py)", "",
        f"Machine: {r['machine']}.", "",
        "## MSLD v1 + MSLD v2.0 curated together", "",
        "| figure | value |", "|---|---|",
        f"| files | {pool['files']} ({pool['v1_files']} v1) |",
        f"| end-to-end time (fingerprints, duplicates, folds, report) | {pool['seconds_end_to_end']} s ({r['per_image_ms_end_to_end']} ms per image) |",
        f"| peak memory of the benchmark process | {r['peak_rss_mb']} MB |",
        f"| v1 images with a copy in v2 | {pool['v1_files_with_a_copy_in_v2']} |",
        f"| v1-v2 pairs: byte-identical / re-encoded, same pixels / altered (bars, resizes, crops) | "
        f"{pool['cross_source_pairs_byte_identical']} / {pool['cross_source_not_identical_pixel_equal']} / "
        f"{pool['cross_source_pairs_not_byte_identical'] - pool['cross_source_not_identical_pixel_equal']} |",
        f"| copies within a source (one picture under two patient ids) | {pool['within_source_pairs']} |",
        f"| label conflicts | {pool['conflicts']} |",
        f"| candidate pairs verified | {pool['candidate_pairs_verified']} |",
        f"| patient ids joined to another through a shared picture | {pool['groups_joined']} |",
        f"| refused candidates: highest texture score / most keypoint inliers | {near['max_texture_among_refused']} / "
        f"{near['max_inliers_among_refused']} (thresholds 0.5 / 12) |",
        f"| v1 images left without a v2 copy, compared with all v2 images by keypoints | {ex['v1_without_v2_copy']} "
        f"({ex['pairs_compared']} pairs); best: {ex['best_pairs'][0] if ex['best_pairs'] else '-'} |",
        "", "Altered v1-v2 matches:", "",
    ] + [f"- {p}" for p in pool["near_cross_pairs"]] + [
        "", "## Recall on synthetic copies of 100 real v2 photos", "",
        "| copy | recall | missed by the candidate search | missed by verification |", "|---|---|---|---|",
    ] + [f"| {k} | {v['recall']:.2f} | {v['missed_by_the_candidate_search']} | {v['missed_by_verification']} |"
         for k, v in r["synthetic_copies"]["kinds"].items()]
    if "scaling" in r:
        sc = r["scaling"]
        lines += ["", "## Scaling (measured on the real pool, projected)", "",
                  f"Verification costs {sc['verify_ms_per_pair']} ms per candidate pair. Fraction of unrelated real pairs "
                  "that fall within the whole-picture pHash radius, and the projected verification work:", "",
                  "| radius | fraction | pairs at 10,000 images | pairs at 100,000 | hours at 100,000 (one core) |", "|---|---|---|---|---|"]
        for rad, v in sc["radius"].items():
            p10, p100 = v["projection"]["10000"], v["projection"]["100000"]
            lines.append(f"| {rad} | {v['fraction_of_unrelated_pairs_within']:.6f} | {p10['candidate_pairs']:,} | "
                         f"{p100['candidate_pairs']:,} | {p100['verify_hours_one_core']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
