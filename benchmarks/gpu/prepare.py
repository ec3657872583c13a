"""Fill the git-ignored folder `.gpu/` that travels to the GPU machine with the checkout (64 MiB in all).

    PYTHONPATH=src .venv/bin/python benchmarks/gpu/prepare.py [--data ../shared/data/msld-v2]
    PYTHONPATH=src .venv/bin/python benchmarks/gpu/prepare.py --pool runs/pool/curated/manifest.csv   # issue 26

It holds a copy of MSLD v2.0's photos, the two curated manifests (official 5 splits; 10 patient-grouped folds)
with paths relative to the repository root, and slim copies of the pretrained weights (no ImageNet classifier,
convolutions in fp16) that `MPOXSCAN_WEIGHTS_DIR` points to: the GPU machine has no curation dependencies and no
weight packages. Curation runs here, once.

With --pool it holds the curated pool instead (issue 26: about 2,400 photos from six sources, 170 MB as published):
each kept photo as the square that training decodes it to (resized and centre-cropped as screening does, at
--size px), re-encoded as JPEG, beside a copy of the manifest whose paths point to them; and only the student's
weights. The checkout alone is about 34 MiB of the 64 MiB that travel, so the photos must fit in what is left. What
training reads (`full` decodes every photo once to that square) is the same up to the JPEG re-encoding; the
manifest keeps each photo's original checksum, source and path, so predictions join the CPU runs' by content. The
"cannot tell" answers (blockiness, off-task limits) are not measured there: a re-encoded photo is not the original.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TARGET = REPO / ".gpu"
MODELS = ("efficientnet_lite0", "efficientnet_lite2")
LIMIT = 64 * 2**20


def _curate(data: Path, out: Path, extra: list[str]) -> Path:
    """One curated manifest whose paths point into .gpu/data (relative to the repository root)."""
    from mpoxscan.data.manifest import read_manifest, write_manifest

    work = out.parent / f".{out.name}-work"
    subprocess.run([sys.executable, "-m", "mpoxscan.cli", "curate", f"msld2={data}", "--group", r"msld2=^([A-Z]+_[0-9]+)_",
                    "--out", str(work), "--force", "--quiet", *extra], check=True)
    rows = read_manifest(work / "manifest.csv")
    for r in rows:
        r.path = str(Path(".gpu/data/msld-v2") / r.relpath)
        r.export_path = ""
    out.mkdir(parents=True, exist_ok=True)
    write_manifest(out / "manifest.csv", rows)
    shutil.rmtree(work)
    return out / "manifest.csv"


def _pool(manifest: Path, size: int, quality: int) -> Path:
    """.gpu/pool: every kept photo of ``manifest`` as the ``size`` px square that training decodes, and the manifest
    with its paths pointing to them (relative to the repository root)."""
    from tqdm import tqdm

    from mpoxscan.data.manifest import kept_rows, write_manifest
    from mpoxscan.images import load_image
    from mpoxscan.training.features import preprocessing_for

    prep = preprocessing_for("efficientnet_lite0", size)  # the same resize-and-crop rule for every network
    pool = TARGET / "pool"
    if pool.exists():
        shutil.rmtree(pool)
    rows = kept_rows(manifest)
    for r in tqdm(rows, desc="pool photos", unit="photo"):
        # The source's relative path plus ".jpg": two files of one folder that differ only in extension stay apart.
        target = pool / "data" / r.source / f"{r.relpath}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        prep.resize_crop(load_image(r.path, min_side=size)).convert("RGB").save(target, "JPEG", quality=quality)
        # Relative to the repository root: the GPU machine runs from a checkout at another path.
        r.path, r.export_path = str(target.relative_to(REPO) if target.is_relative_to(REPO) else target), ""
    write_manifest(pool / "manifest.csv", rows)
    return pool / "manifest.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "msld-v2")
    parser.add_argument("--pool", type=Path, help="a curated pool manifest: carry its kept photos (and Lite0's "
                        "weights only) instead of MSLD v2.0's")
    parser.add_argument("--size", type=int, default=224, help="--pool: the photos' square size in px (default 224, "
                        "the shipped model's; the student must train at this size or below)")
    parser.add_argument("--quality", type=int, default=80, help="--pool: JPEG quality (default 80: at 224 px the "
                        "pool is about 20 MiB, which leaves a margin under the 64 MiB)")
    args = parser.parse_args()
    if args.pool:
        if not args.pool.exists():
            raise SystemExit(f"{args.pool}: no such manifest (curate the pool first: docs/data/pool.md)")
        for old in ("data", "curated", "meta", "weights"):  # MSLD's set would not fit beside the pool
            shutil.rmtree(TARGET / old, ignore_errors=True)
        _pool(args.pool, args.size, args.quality)
        _finish(MODELS[:1])
        return
    data = TARGET / "data" / "msld-v2"
    if data.exists():
        shutil.rmtree(data)
    shutil.copytree(args.data, data, ignore=shutil.ignore_patterns("_meta", "*.md"))
    (TARGET / "meta").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(args.data / "_meta" / "folds.csv", TARGET / "meta" / "folds.csv")
    _curate(args.data, TARGET / "curated" / "official", ["--folds-from", str(args.data / "_meta" / "folds.csv")])
    _curate(args.data, TARGET / "curated" / "10fold", ["--folds", "10"])
    shutil.rmtree(TARGET / "pool", ignore_errors=True)
    _finish(MODELS)


def _finish(models: tuple[str, ...]) -> None:
    """The slim weights of ``models``, then the size check of what travels."""
    from mpoxscan.models import classifier_keys, create_model, get_spec
    from mpoxscan.models.weights import write_slim

    for name in models:
        model = create_model(name, pretrained=False)
        write_slim(get_spec(name).weights, TARGET / "weights", tuple(classifier_keys(model)))
    size = sum(p.stat().st_size for p in TARGET.rglob("*") if p.is_file())
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    checkout = sum((REPO / f.decode()).stat().st_size for f in tracked if f and (REPO / f.decode()).is_file())
    print(f".gpu: {size / 2**20:.1f} MiB; with the checkout {(size + checkout) / 2**20:.1f} MiB of {LIMIT / 2**20:.0f}")
    if size + checkout > LIMIT:
        raise SystemExit("too large to travel: drop a weight file or shrink the photos")


if __name__ == "__main__":
    main()
