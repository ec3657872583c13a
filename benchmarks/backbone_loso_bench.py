"""Which ImageNet backbone separates mpox from its look-alikes on sites it never saw? A linear probe under leave one
site out (issue 26, item 3: "every choice of backbone is made on (c)").

Fine-tuning one backbone under leave-one-site-out costs about 100 minutes on 2 cores, so the candidates are first
compared at the probe level: frozen ImageNet features (each backbone at its own input size), one logistic-regression
head per left-out site (`mpoxscan cv --strategy linear --protocol loso`, resumable; C chosen on the inner
validation), the same photos for every backbone. Per left-out site that has mpox, and over all left-out photos: the
mpox-vs-rest AUC of P(mpox) of each backbone, and each backbone's AUC minus the reference's (Lite0, the shipped
one) with a 95 % interval from a paired bootstrap that draws whole leakage groups (copies and patients together),
the same draw for both backbones. A probe ranks what the frozen features hold; it does not say what fine-tuning
on the pool makes of them (the recipe that ships fine-tunes the last blocks).

    PYTHONPATH=src .venv/bin/python benchmarks/backbone_loso_bench.py [--views 0]
        [--models efficientnet_lite0,efficientnet_lite1,efficientnet_lite2,mobilenetv2_100]

Writes benchmarks/results/pool/backbone-loso/: backbones.md, backbones.json, backbones.png, and the run's
oof_predictions.csv and results.json (every figure re-scores from them).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from mpoxscan.evaluation.metrics import POSITIVE, patient_bootstrap, rank_auc

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MODELS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "mobilenetv2_100")


def read_oof(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """{model: {"site", "label", "group", "sha256", "p"}} from a cv run's oof_predictions.csv, rows in one order
    (by site and SHA-256) for every model, so that the models are paired photo by photo."""
    by_model: dict[str, list[dict]] = {}
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            if r.get("variant", "main") == "main":
                by_model.setdefault(r["model"], []).append(r)
    out = {}
    for model, rows in by_model.items():
        rows.sort(key=lambda r: (r["fold"], r["sha256"]))
        out[model] = {"site": np.array([r["fold"] for r in rows]), "label": np.array([r["label"] for r in rows]),
                      "group": np.array([r["group"] for r in rows]), "sha256": np.array([r["sha256"] for r in rows]),
                      "p": np.array([float(r[f"p_{POSITIVE}"]) for r in rows])}
    return out


def compare(oof: dict[str, dict[str, np.ndarray]], reference: str, n_boot: int = 1000, seed: int = 0) -> dict:
    """Per site with mpox (and "all": every left-out photo) the AUC of each model and its paired difference from
    ``reference``, with group-bootstrap intervals."""
    ref = oof[reference]
    for model, cols in oof.items():
        if not np.array_equal(cols["sha256"], ref["sha256"]) or not np.array_equal(cols["site"], ref["site"]):
            raise SystemExit(f"error: {model} and {reference} predicted different photos: not paired")
    sites = sorted(set(ref["site"][ref["label"] == POSITIVE]))
    out: dict = {"reference": reference, "n_boot": n_boot, "sites": {}}
    for site in [*sites, "all"]:
        mask = np.ones(len(ref["site"]), bool) if site == "all" else ref["site"] == site
        positive = ref["label"][mask] == POSITIVE
        scores = {m: cols["p"][mask] for m, cols in oof.items()}

        def statistic(index: np.ndarray) -> dict[str, float]:
            pos = positive[index]
            if pos.all() or not pos.any():
                return {k: float("nan") for m in scores for k in (m, f"{m} - {reference}")}
            auc = {m: rank_auc(pos, s[index]) for m, s in scores.items()}
            return auc | {f"{m} - {reference}": auc[m] - auc[reference] for m in scores if m != reference}

        boot = patient_bootstrap(ref["group"][mask], statistic, n_boot=n_boot, seed=seed)
        out["sites"][site] = {"photos": int(mask.sum()), "mpox": int(positive.sum()),
                              "auc": {m: boot[m] for m in scores},
                              "minus_reference": {m: boot[f"{m} - {reference}"] for m in scores if m != reference}}
    return out


def _ci(e: dict, signed: bool = False) -> str:
    f = "{:+.3f}" if signed else "{:.3f}"
    return f"{f.format(e['value'])} [{f.format(e['ci95'][0])}, {f.format(e['ci95'][1])}]"


def write(result: dict, models: list[str], out: Path, config: dict, name: str = "backbones",
          heading: str = "Backbones under leave one site out, linear probe (benchmarks/backbone_loso_bench.py)") -> None:
    """NAME.json, NAME.md and NAME.png of :func:`compare`'s result (also colour_loso_bench's: the columns are
    whatever was compared)."""
    (out / f"{name}.json").write_text(json.dumps({"config": config, **result}, indent=2) + "\n")
    ref = result["reference"]
    lines = [f"## {heading}", "",
             f"Frozen ImageNet features, {config['views']} augmented view(s) per training photo beside the plain one, "
             "one logistic-regression head per left-out site (C chosen on its inner validation). Mpox-vs-rest AUC of "
             "P(mpox) on each left-out site's photos, and its difference from "
             f"`{ref}` paired on the same photos; 95 % intervals from {result['n_boot']} bootstrap draws of whole "
             "leakage groups. \"all\": every left-out photo of the five sites, each scored by the model that never "
             "saw its site.", "",
             "| left-out site | photos | mpox | " + " | ".join(f"`{m}`" for m in models) + " |",
             "|---|---|---|" + "---|" * len(models)]
    for site, e in result["sites"].items():
        cells = [_ci(e["auc"][m]) + ("" if m == ref else f"<br>{_ci(e['minus_reference'][m], True)}") for m in models]
        lines.append(f"| {site} | {e['photos']} | {e['mpox']} | " + " | ".join(cells) + " |")
    lines += ["", f"Each cell: AUC [95 % interval]; below it, the AUC minus `{ref}`'s on the same photos. An "
              "interval of the difference that excludes 0 is a difference the photos support."]
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    _plot(result, models, out / f"{name}.png")


def _plot(result: dict, models: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sites = list(result["sites"])
    x = np.arange(len(sites))
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for k, m in enumerate(models):
        e = [result["sites"][s]["auc"][m] for s in sites]
        v = np.array([d["value"] for d in e])
        err = np.array([[d["value"] - d["ci95"][0], d["ci95"][1] - d["value"]] for d in e]).T
        ax.bar(x + (k - (len(models) - 1) / 2) * width, v, width, yerr=err, capsize=2, label=m)
    ax.axhline(0.93, color="k", lw=0.8, ls="--", label="issue 26 aim (fine-tuned): 0.93")
    ax.set_xticks(x, sites)
    ax.set_ylim(0.5, 1.0)
    ax.set_ylabel("mpox-vs-rest AUC, left-out site")
    ax.set_title("Linear probe on frozen ImageNet features, leave one site out", fontsize=10)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "pool")
    ap.add_argument("--manifest", type=Path, help="a curated manifest with a site column (default: the pool, curated "
                                                  "into WORK/curated)")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--views", type=int, default=0, help="augmented views per training photo (0: the plain one only)")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "pool" / "backbone-loso")
    args = ap.parse_args()
    sys.path.insert(0, str(HERE))
    from pool_bench import curated  # the pool as every pool benchmark curates it

    manifest = args.manifest or curated(args.data.resolve(), args.work)
    models = args.models.split(",")
    run = args.work / f"linear-loso-views{args.views}"
    command = [sys.executable, "-m", "mpoxscan.cli", "cv", "--manifest", str(manifest), "--models", args.models,
               "--strategy", "linear", "--protocol", "loso", "--views", str(args.views), "--out", str(run)]
    print("$ mpoxscan " + " ".join(command[3:]), flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True)
    seconds = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    for name in ("oof_predictions.csv", "results.json", "config.json"):
        shutil.copyfile(run / name, args.out / name)
    result = compare(read_oof(run / "oof_predictions.csv"), models[0], n_boot=args.n_boot)
    write(result, models, args.out, {"models": models, "views": args.views, "cv_seconds_this_call": round(seconds)})
    print(f"wrote {args.out / 'backbones.md'}")


if __name__ == "__main__":
    main()
