"""Is the left-out MSLD site hard because it is another site, or because leaving it out leaves few mpox photos?

Under leave one site out, the model that never saw MSLD learns mpox from the 110 mpox photos of msid and
viral-rash; the models for msid and viral-rash learn it from about 300 (MSLD's 260 among them). This benchmark
separates the two explanations at the probe level: on the msid and viral-rash folds it keeps every training photo
except the mpox ones, of which it keeps only N (whole leakage groups drawn at random, several draws), with the same
inner validation (C chosen on it), and scores the mpox-vs-rest AUC on the same left-out photos. If the AUC with 110
mpox photos falls to MSLD's, the count explains MSLD's figure; if it stays, the site does. Then, from the committed
predictions of the fine-tuned leave-one-site-out run(s) (--run), which of a site's look-alikes the model cannot
tell from its mpox photos: the AUC of mpox against each class alone, per left-out site.

EfficientNet-Lite0's frozen ImageNet features of each photo as screening decodes it, fitted as `mpoxscan cv
--strategy linear` fits them (`training.linear.fit_on_split`: class-balanced logistic regression, C chosen on the
inner validation, the same feature cache), nothing fitted on a test photo.

    PYTHONPATH=src .venv/bin/python benchmarks/mpox_count_loso_bench.py [--counts 55,110,220] [--draws 3]
        [--run benchmarks/results/pool/finetune-loso --run benchmarks/results/pool/finetune-loso-seed1]

Writes benchmarks/results/pool/mpox-count-loso/: counts.md, counts.json, counts.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

from mpoxscan.evaluation.metrics import POSITIVE, rank_auc

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MODEL = "efficientnet_lite0"


def draw_groups(indices: list[int], groups: list[str], n: int, rng: np.random.Generator) -> list[int]:
    """Whole groups of ``indices``, in a random order, until at least ``n`` photos (all of them if fewer)."""
    by_group: dict[str, list[int]] = {}
    for k in indices:
        by_group.setdefault(groups[k], []).append(k)
    keys = list(by_group)
    chosen: list[int] = []
    for g in rng.permutation(len(keys)):
        if len(chosen) >= n:
            break
        chosen += by_group[keys[g]]
    return chosen


def measure(manifest: Path, sites: list[str], counts: list[int], draws: int, reference: list[str]) -> dict:
    """The probes: on each of ``sites`` with every count of training mpox photos (``draws`` draws each) and with all
    of them; on each ``reference`` site with all of them only (the MSLD fold, for comparison)."""
    from tqdm import tqdm

    from mpoxscan.data.manifest import kept_rows
    from mpoxscan.data.splits import make_splits
    from mpoxscan.numeric import softmax
    from mpoxscan.training.cv import CVConfig
    from mpoxscan.training.linear import fit_on_split

    rows = kept_rows(manifest)
    classes = sorted({r.label for r in rows})
    k = classes.index(POSITIVE)
    # cv's linear strategy, fitted on a split whose training side is thinned: the plain view, seed 0, the feature
    # cache that `mpoxscan cv --strategy linear` fills.
    config = CVConfig(manifest=str(manifest), models=[MODEL], strategy="linear", protocol="loso", views=0)
    y = np.array([classes.index(r.label) for r in rows])
    groups = [r.group for r in rows]
    splits = {s.name: s for s in make_splits(rows, "loso", 0)}
    out: dict = {"model": MODEL, "draws": draws, "sites": {}}
    plan = [(site, n, d) for site in sites for n in [*counts, None] for d in range(1 if n is None else draws)]
    plan += [(site, None, 0) for site in reference if site not in sites]
    with tqdm(total=len(plan), desc="probes", unit="probe") as bar:
        for site, n, d in plan:
            split = splits[site]
            mpox = [i for i in split.train if y[i] == k]
            kept = mpox if n is None else draw_groups(mpox, groups, n, np.random.default_rng(d))
            train = [i for i in split.train if y[i] != k] + kept
            probe, features = fit_on_split(MODEL, rows, dataclasses.replace(split, train=train), classes, config)
            p = softmax(probe.decision_function(features[0][split.test]))[:, k]
            entry = out["sites"].setdefault(site, {"photos": len(split.test), "mpox": int((y[split.test] == k).sum()),
                                                   "training_mpox": len(mpox), "by_count": {}})
            entry["by_count"].setdefault("all" if n is None else str(n), []).append(
                {"draw": d, "training_mpox": len(kept), "C": probe.C_,
                 "auc": rank_auc(y[split.test] == k, p)})
            bar.update()
    msld = splits.get("msld")
    if msld is not None:
        out["msld_fold_training_mpox"] = int(sum(y[i] == k for i in msld.train))
    return out


def against_each_class(oof: Path) -> dict:
    """{left-out site: {"all": mpox-vs-rest AUC, "classes": {class: {"photos", "auc"}}}}: on each left-out site with
    mpox, the AUC of P(mpox) between its mpox photos and the photos of one other class (a committed
    oof_predictions.csv of a leave-one-site-out run)."""
    from backbone_loso_bench import read_oof

    cols = read_oof(oof)[MODEL]
    out = {}
    for site in sorted(set(cols["site"][cols["label"] == POSITIVE])):
        mask = cols["site"] == site
        label, p = cols["label"][mask], cols["p"][mask]
        positive = label == POSITIVE
        out[site] = {"all": rank_auc(positive, p), "classes": {}}
        for c in sorted(set(label) - {POSITIVE}):
            pair = positive | (label == c)
            out[site]["classes"][c] = {"photos": int((label == c).sum()), "auc": rank_auc(positive[pair], p[pair])}
    return out


def write(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "counts.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["## Fewer mpox photos, same left-out site (benchmarks/mpox_count_loso_bench.py)", "",
             f"Linear probe on `{result['model']}`'s frozen features, leave one site out: the fold's training photos "
             "with only N of its mpox photos (whole leakage groups drawn at random; "
             f"{result['draws']} draws each), the same inner validation, mpox-vs-rest AUC on the left-out site. The "
             f"MSLD fold trains with {result.get('msld_fold_training_mpox', '?')} mpox photos.", "",
             "| left-out site | photos (mpox) | mpox photos in training | AUC, mean of the draws | AUC per draw |",
             "|---|---|---|---|---|"]
    for site, e in result["sites"].items():
        for count, entries in e["by_count"].items():
            aucs = [x["auc"] for x in entries]
            trained = sorted({x["training_mpox"] for x in entries})
            label = f"all {trained[0]}" if count == "all" else f"{count} (drawn: {trained[0]}-{trained[-1]})"
            lines.append(f"| {site} | {e['photos']} ({e['mpox']}) | {label} | {np.mean(aucs):.3f} | "
                         + ", ".join(f"{a:.3f}" for a in aucs) + " |")
    runs = result.get("against_each_class", {})
    if runs:
        classes = sorted({c for r in runs.values() for e in r.values() for c in e["classes"]})
        lines += ["", "Mpox against each other class alone: the AUC of P(mpox) between a left-out site's mpox photos and "
                  "its photos of that class, fine-tuned leave-one-site-out run(s): " + ", ".join(f"`{r}`" for r in runs)
                  + " (one value per run; - : the site has no photo of the class).", "",
                  "| left-out site | mpox vs rest | " + " | ".join(classes) + " |", "|---|---|" + "---|" * len(classes)]
        def cell(site: str, c: str | None) -> str:
            """One value per run: the site's mpox-vs-rest AUC (c None), or mpox against class c."""
            got = [r[site]["all"] if c is None else r[site]["classes"].get(c, {}).get("auc") for r in runs.values()]
            return " / ".join("-" if v is None else f"{v:.3f}" for v in got)

        for site in next(iter(runs.values())):
            lines.append(f"| {site} | {cell(site, None)} | " + " | ".join(cell(site, c) for c in classes) + " |")
    (out / "counts.md").write_text("\n".join(lines) + "\n")
    _plot(result, out / "counts.png")


def _plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for k, (site, e) in enumerate(result["sites"].items()):
        colour = f"C{k}"
        xs, ys = [], []
        for entries in e["by_count"].values():
            ax.scatter([x["training_mpox"] for x in entries], [x["auc"] for x in entries], s=14, alpha=0.5,
                       color=colour)
            xs.append(np.mean([x["training_mpox"] for x in entries]))
            ys.append(np.mean([x["auc"] for x in entries]))
        order = np.argsort(xs)
        ax.plot(np.array(xs)[order], np.array(ys)[order], marker="o", color=colour,
                label=f"{site} left out" + (" (all its training mpox photos)" if len(xs) == 1 else ""))
    if "msld_fold_training_mpox" in result:
        ax.axvline(result["msld_fold_training_mpox"], color="grey", ls=":", lw=1,
                   label="mpox photos the MSLD fold trains with")
    ax.set_xlabel("mpox photos in training")
    ax.set_ylabel("mpox-vs-rest AUC, left-out site")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "pool")
    ap.add_argument("--sites", default="msid,viral-rash")
    ap.add_argument("--counts", default="55,110,220")
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--reference", default="msld", help="sites probed with all their training mpox photos only")
    ap.add_argument("--skip-probes", action="store_true", help="keep the probes of the committed counts.json (142 s "
                    "to make again on 2 cores, 1,350 s beside a fine-tune) and only remake the table of mpox against "
                    "each class from --run")
    ap.add_argument("--run", action="append", type=Path, default=[], help="a committed fine-tuned leave-one-site-out "
                    "run (its oof_predictions.csv) for the table of mpox against each class (repeat for several)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "pool" / "mpox-count-loso")
    args = ap.parse_args()
    sys.path.insert(0, str(HERE))
    from pool_bench import curated  # the pool as every pool benchmark curates it

    if args.skip_probes:
        if not (args.out / "counts.json").is_file():
            raise SystemExit(f"error: {args.out / 'counts.json'} not found: run without --skip-probes first")
        result = json.loads((args.out / "counts.json").read_text())
    else:
        started = time.perf_counter()
        result = measure(curated(args.data.resolve(), args.work), args.sites.split(","),
                         [int(c) for c in args.counts.split(",")], args.draws,
                         [s for s in args.reference.split(",") if s])
        result["seconds"] = round(time.perf_counter() - started)
    result["against_each_class"] = {str(r): against_each_class(r / "oof_predictions.csv") for r in args.run}
    write(result, args.out)
    print((args.out / "counts.md").read_text())


if __name__ == "__main__":
    main()
