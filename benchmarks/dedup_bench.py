"""Recall and false matches of curate's de-duplication on a check set of altered copies (issue 26).

The check set: originals are real MSLD v2.0 photos, one per patient group that curate keeps apart (so no two
originals are known copies of each other); each gets altered copies of a few random kinds
(benchmarks/dedup_checkset.py: crops, zooms, recolours, turns, watermarks, squashes, re-encodes, figure panels,
and all at once), and the lot is mixed with unrelated photos: the rest of MSLD v2.0 and DermNet NZ's atlas (which
shares no picture with MSLD: ../shared/data/dermnet-nz/SOURCE.md). Curate's duplicate search then runs over
everything, as `mpoxscan curate` runs it.

- recall: the share of copies that end in the same cluster as their original (what keeps them in one group);
  per kind of alteration, and the share matched directly to the original;
- false matches: matches that join a check-set picture (an original or a copy) with a picture of another family or
  with an unrelated photo, per picture of the check set; matches among the unrelated photos themselves are not
  counted (the atlas and MSLD hold real copies of their own) but shown in a contact sheet.

    PYTHONPATH=src .venv/bin/python benchmarks/dedup_bench.py [--data ../shared/data] [--originals 400]

Writes benchmarks/results/dedup.json, dedup.md and dedup_misses.png (copies not joined to their original) and
dedup_false.png (false matches), to be checked by eye.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from dedup_checkset import TRANSFORMS  # noqa: E402

from mpoxscan.data import fingerprint  # noqa: E402
from mpoxscan.data.duplicates import DuplicateParams, clusters, find_duplicates  # noqa: E402
from mpoxscan.data.embedding import model_bytes  # noqa: E402
from mpoxscan.images import load_image  # noqa: E402

RESULTS = HERE / "results"
COPIES_PER_ORIGINAL = 4


def build(data: Path, folder: Path, n_originals: int, seed: int) -> list[dict]:
    """Write the altered copies into ``folder``; every picture of the check set as {path, family, kind}."""
    from mpoxscan.data.curate import CurateOptions, curate
    from mpoxscan.data.sources import Source

    # One original per leakage group of MSLD v2.0 as curate keeps it: known copies within MSLD are already joined.
    msld = curate([Source("msld2", data / "msld-v2", r"^([A-Z]+_\d+)_")], CurateOptions(progress=False, n_folds=5)).rows
    rng = np.random.default_rng(seed)
    by_group: dict[str, list[str]] = defaultdict(list)
    for row in msld:
        if row.status == "kept":
            by_group[row.group].append(row.path)
    groups = sorted(by_group)
    rng.shuffle(groups)
    originals = [by_group[g][0] for g in groups[:n_originals]]
    unrelated = [p for g in groups[n_originals:] for p in by_group[g]]
    unrelated += sorted(str(p) for p in (data / "dermnet-nz").glob("*/*.jpg"))
    entries = []
    kinds = list(TRANSFORMS)
    for family, path in enumerate(originals):
        entries.append({"path": path, "family": family, "kind": "original"})
        image = load_image(path)
        for kind in rng.choice(kinds, COPIES_PER_ORIGINAL, replace=False).tolist():
            copy = TRANSFORMS[kind](image, np.random.default_rng([seed, family, kinds.index(kind)]))
            target = folder / kind / f"{family:04d}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            copy.save(target)
            entries.append({"path": str(target), "family": family, "kind": kind})
    entries += [{"path": p, "family": None, "kind": "unrelated"} for p in unrelated]
    return entries


def evaluate(entries: list[dict], params: DuplicateParams, jobs: int | None, prints=None) -> dict:
    paths = [Path(e["path"]) for e in entries]
    started = time.perf_counter()
    if prints is None:
        prints = fingerprint.compute_all(paths, jobs=jobs, progress=True, embedder=model_bytes())
    fingerprinted = time.perf_counter()
    matches, n_candidates = find_duplicates(paths, prints, params, progress=True, jobs=jobs)
    verified = time.perf_counter()
    cluster = clusters(len(paths), matches)
    family = [e["family"] for e in entries]
    original_of = {e["family"]: k for k, e in enumerate(entries) if e["kind"] == "original"}
    direct = {(min(m.i, m.j), max(m.i, m.j)) for m in matches}
    per_kind: dict[str, list[tuple[bool, bool]]] = defaultdict(list)
    misses = []
    for k, e in enumerate(entries):
        if e["family"] is None or e["kind"] == "original":
            continue
        o = original_of[e["family"]]
        joined = bool(cluster[k] == cluster[o])
        per_kind[e["kind"]].append((joined, (min(k, o), max(k, o)) in direct))
        if not joined:
            misses.append((o, k))
    in_check = [k for k, e in enumerate(entries) if e["family"] is not None]
    false = [m for m in matches if family[m.i] != family[m.j] and (family[m.i] is not None or family[m.j] is not None)]
    falsely_joined = {k for m in false for k in (m.i, m.j) if family[k] is not None}
    among_unrelated = [m for m in matches if family[m.i] is None and family[m.j] is None]
    copies = [x for v in per_kind.values() for x in v]
    return {
        "pictures": len(entries), "originals": len(original_of), "copies": len(copies),
        "unrelated": sum(e["family"] is None for e in entries),
        "recall": round(float(np.mean([j for j, _ in copies])), 4),
        "recall_direct": round(float(np.mean([d for _, d in copies])), 4),
        "recall_by_kind": {kind: {"copies": len(v), "recall": round(float(np.mean([j for j, _ in v])), 3),
                                  "direct": round(float(np.mean([d for _, d in v])), 3)}
                           for kind, v in sorted(per_kind.items())},
        "false_matches": len(false),
        "false_match_rate_per_check_picture": round(len(falsely_joined) / len(in_check), 4),
        "check_pictures_falsely_joined": len(falsely_joined),
        "matches_among_unrelated_photos": len(among_unrelated),
        "matches_by_method": dict(Counter(m.method for m in matches)),
        "candidate_pairs_verified": n_candidates,
        "seconds": {"fingerprints": round(fingerprinted - started, 1), "search_and_verify": round(verified - fingerprinted, 1)},
        "_misses": misses, "_false": [(m.i, m.j, m.describe()) for m in false],
        "_unrelated": [(m.i, m.j, m.describe()) for m in among_unrelated],
    }


def sheet(entries: list[dict], pairs: list[tuple], path: Path, title: str, limit: int = 48) -> None:
    from PIL import Image, ImageDraw

    thumb, cols = 120, 4
    pairs = pairs[:limit]
    cell_w, cell_h = 2 * thumb + 12, thumb + 26
    out = Image.new("RGB", (cols * cell_w, 22 + max(1, (len(pairs) + cols - 1) // cols) * cell_h), "white")
    draw = ImageDraw.Draw(out)
    draw.text((4, 4), f"{title} ({len(pairs)} shown)", fill="black")
    for n, pair in enumerate(pairs):
        x, y = (n % cols) * cell_w, 22 + (n // cols) * cell_h
        for side, k in enumerate(pair[:2]):
            im = load_image(entries[k]["path"], min_side=thumb)
            im.thumbnail((thumb, thumb))
            out.paste(im, (x + side * thumb, y))
        label = entries[pair[1]]["kind"] + (f" {pair[2]}" if len(pair) > 2 else "")
        draw.text((x, y + thumb + 2), label[:40], fill="darkred")
    out.save(path)


def markdown(r: dict) -> str:
    lines = ["# De-duplication check set (benchmarks/dedup_bench.py)", "",
             f"Machine: {platform.machine()}, Python {platform.python_version()}; {r['pictures']} pictures: "
             f"{r['originals']} MSLD v2.0 originals (one per patient group), {r['copies']} altered copies of them "
             f"({COPIES_PER_ORIGINAL} random kinds each), {r['unrelated']} unrelated photos (the rest of MSLD v2.0, "
             "DermNet NZ).", "",
             "| figure | value |", "|---|---|",
             f"| recall: copies in their original's cluster | **{r['recall']:.1%}** |",
             f"| copies matched to their original directly | {r['recall_direct']:.1%} |",
             f"| false matches (a check-set picture joined to another family or an unrelated photo) | {r['false_matches']} |",
             f"| check-set pictures falsely joined | {r['check_pictures_falsely_joined']} of {r['originals'] + r['copies']} "
             f"(**{r['false_match_rate_per_check_picture']:.2%}**) |",
             f"| matches among the unrelated photos (real copies in MSLD and the atlas; not counted) | {r['matches_among_unrelated_photos']} |",
             f"| candidate pairs verified | {r['candidate_pairs_verified']} |",
             f"| time: fingerprints / search and verification | {r['seconds']['fingerprints']} s / {r['seconds']['search_and_verify']} s |",
             "", "| alteration | copies | recall (same cluster) | matched directly |", "|---|---|---|---|"]
    for kind, v in r["recall_by_kind"].items():
        lines.append(f"| {kind} | {v['copies']} | {v['recall']:.1%} | {v['direct']:.1%} |")
    lines += ["", "Copies missed: dedup_misses.png; false matches: dedup_false.png; matches among the unrelated "
              "photos: dedup_unrelated.png.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--originals", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int)
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--grid", nargs="+", metavar="NAME=VALUE,...",
                    help="tuning: evaluate these settings on one check set (fingerprinted once), print a table, write "
                         "nothing; tune on another --seed than the one whose figures are reported")
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="mpoxscan-dedup-"))
    try:
        entries = build(args.data.resolve(), folder, args.originals, args.seed)
        if args.grid:
            prints = fingerprint.compute_all([Path(e["path"]) for e in entries], jobs=args.jobs, progress=True,
                                             embedder=model_bytes())
            for setting in args.grid:
                values = {k: type(getattr(DuplicateParams(), k))(v) for k, v in (x.split("=") for x in setting.split(","))}
                r = evaluate(entries, DuplicateParams(**values), args.jobs, prints)
                print(f"{setting:40s} recall {r['recall']:.4f} false/picture {r['false_match_rate_per_check_picture']:.4f} "
                      f"false {r['false_matches']} pairs {r['candidate_pairs_verified']} {r['seconds']['search_and_verify']} s "
                      + " ".join(f"{k}={v['recall']:.2f}" for k, v in r["recall_by_kind"].items()), flush=True)
            return
        r = evaluate(entries, DuplicateParams(), args.jobs)
        args.results.mkdir(parents=True, exist_ok=True)
        sheet(entries, r["_misses"], args.results / "dedup_misses.png", "Copies not joined to their original")
        sheet(entries, r["_false"], args.results / "dedup_false.png", "False matches")
        sheet(entries, r["_unrelated"], args.results / "dedup_unrelated.png", "Matches among the unrelated photos")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    public = {k: v for k, v in r.items() if not k.startswith("_")}
    public["params"] = DuplicateParams().__dict__
    (args.results / "dedup.json").write_text(json.dumps(public, indent=2) + "\n")
    (args.results / "dedup.md").write_text(markdown(public))
    print(markdown(public))


if __name__ == "__main__":
    main()
