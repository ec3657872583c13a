"""Fill the git-ignored folder `.gpu/` that travels to the GPU machine with the checkout (64 MiB in all).

    PYTHONPATH=src .venv/bin/python benchmarks/gpu/prepare.py [--data ../shared/data/msld-v2]

It holds a copy of MSLD v2.0's photos, the two curated manifests (official 5 splits; 10 patient-grouped folds)
with paths relative to the repository root, and slim copies of the pretrained weights (no ImageNet classifier,
convolutions in fp16) that `MPOXSCAN_WEIGHTS_DIR` points to: the GPU machine has no curation dependencies and no
weight packages. Curation runs here, once.
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


def main() -> None:
    from mpoxscan.models import classifier_keys, create_model, get_spec
    from mpoxscan.models.weights import write_slim

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "msld-v2")
    args = parser.parse_args()
    data = TARGET / "data" / "msld-v2"
    if data.exists():
        shutil.rmtree(data)
    shutil.copytree(args.data, data, ignore=shutil.ignore_patterns("_meta", "*.md"))
    (TARGET / "meta").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(args.data / "_meta" / "folds.csv", TARGET / "meta" / "folds.csv")
    _curate(args.data, TARGET / "curated" / "official", ["--folds-from", str(args.data / "_meta" / "folds.csv")])
    _curate(args.data, TARGET / "curated" / "10fold", ["--folds", "10"])
    for name in MODELS:
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
