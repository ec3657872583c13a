"""Does colour constancy help on sites the model never saw? A linear probe under leave one site out, with and without
shades-of-gray colour constancy (issue 26: every choice is made on (c)).

The sites differ in cameras, lighting and colour casts (web-scraped MSLD, atlas photos of DermNet NZ, phone photos
of msid); correcting each photo's illuminant before the network is the classic answer in skin-lesion work across
data sets (shades of gray, Finlayson & Trezzi 2004; Barata et al. 2015). Screened here at the probe level, as
backbone_loso_bench screens backbones: EfficientNet-Lite0's frozen ImageNet features of each photo as screening
decodes it, then the same photo with its illuminant corrected (Minkowski norm p = 6, each channel scaled so that
the estimated illuminant turns grey), one logistic-regression head per left-out site, and the mpox-vs-rest AUC of
the two paired on the same photos (group bootstrap). The correction is an experiment of this script only: it is
not an option of screening (the phone page would have to reproduce it), and it is applied by replacing
`Preprocessing.normalize` in this process, with its own feature cache so that no corrected feature reaches the
plain cache.

    PYTHONPATH=src .venv/bin/python benchmarks/colour_loso_bench.py [--reference runs/pool/linear-loso-views0]

The reference is backbone_loso_bench's run (its Lite0 column; it is made when missing). Writes
benchmarks/results/pool/colour-loso/: colour.md, colour.json, colour.png and the corrected run's predictions.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MODEL = "efficientnet_lite0"


def shades_of_gray(image: Image.Image, p: float = 6.0) -> Image.Image:
    """The photo with its illuminant, estimated by the Minkowski p-norm of each channel, turned grey (von Kries
    gains that keep the illuminant's mean). Written here: no maintained imaging library offers illuminant estimation
    (scikit-image and colour-science adapt between known illuminants; they do not estimate one from a photo)."""
    arr = np.asarray(image.convert("RGB"), np.float64)
    illuminant = np.power(np.mean(np.power(arr, p), axis=(0, 1)), 1.0 / p)
    gains = illuminant.mean() / np.maximum(illuminant, 1e-6)
    return Image.fromarray(np.clip(arr * gains, 0, 255).round().astype(np.uint8))


def corrected_run(manifest: Path, run: Path, cache: Path) -> float:
    """`cv --strategy linear --protocol loso` on Lite0 with every network input colour-corrected; its seconds."""
    from mpoxscan.preprocess import Preprocessing
    from mpoxscan.training.cv import CVConfig, run_cv

    plain = Preprocessing.normalize
    Preprocessing.normalize = lambda self, image: plain(self, shades_of_gray(image))
    try:
        started = time.perf_counter()
        run_cv(CVConfig(manifest=str(manifest), models=[MODEL], strategy="linear", protocol="loso", views=0,
                        extra={"cache": str(cache)}), run)
        return time.perf_counter() - started
    finally:
        Preprocessing.normalize = plain


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "pool")
    ap.add_argument("--reference", type=Path, help="a linear LOSO run with Lite0 (default WORK/linear-loso-views0, "
                                                   "made by backbone_loso_bench when missing)")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "pool" / "colour-loso")
    args = ap.parse_args()
    sys.path.insert(0, str(HERE))
    from backbone_loso_bench import compare, read_oof, write
    from pool_bench import curated  # the pool as every pool benchmark curates it

    manifest = curated(args.data.resolve(), args.work)
    reference = args.reference or args.work / "linear-loso-views0"
    if not (reference / "oof_predictions.csv").exists():
        subprocess.run([sys.executable, str(HERE / "backbone_loso_bench.py"), "--models", MODEL, "--work",
                        str(args.work)], check=True)
    ref_config = json.loads((reference / "config.json").read_text())
    run = args.work / "linear-loso-shades-of-gray"
    seconds = corrected_run(manifest, run, args.work / "cache-shades-of-gray")
    if json.loads((run / "config.json").read_text())["manifest_sha256"] != ref_config["manifest_sha256"]:
        raise SystemExit(f"{reference} was run on another curation of the pool: not paired")
    oof = {"plain": read_oof(reference / "oof_predictions.csv")[MODEL],
           "shades of gray": read_oof(run / "oof_predictions.csv")[MODEL]}
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run / "oof_predictions.csv", args.out / "oof_predictions.csv")
    result = compare(oof, "plain", n_boot=args.n_boot)
    write(result, list(oof), args.out, {"model": MODEL, "views": 0, "minkowski_p": 6, "reference": str(reference),
                                        "cv_seconds_this_call": round(seconds)},
          name="colour", heading=f"Colour constancy under leave one site out, linear probe on `{MODEL}` "
                                 "(benchmarks/colour_loso_bench.py)")
    print(f"wrote {args.out / 'colour.md'}")


if __name__ == "__main__":
    main()
