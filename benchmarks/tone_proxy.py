"""A quick proxy of the skin-tone mitigations, to choose which to run as full `finetune` cross-validations.

    PYTHONPATH=src .venv/bin/python benchmarks/tone_proxy.py --manifest runs/msld2-10fold/manifest.csv

Not the shipped recipe: a class-balanced logistic regression (scikit-learn, fixed C) on the channel means and
standard deviations of the frozen activations that `finetune` caches (EfficientNet-Lite0, entering block 11; no
network is trained: minutes, not hours). Same 10 patient-grouped folds; trained on the plain view and --views
augmented views (plain or skin-toned), tested on the plain view. Compares: none, tone_balance (re-weighting),
tone_views, both. Needs the activation caches of a `cv --strategy finetune` run and of a `--tone-views` one.
Writes benchmarks/results/tone/proxy.md and proxy.json (proxy-views4.* with --views 4).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from mpoxscan.data.manifest import row_ita
from mpoxscan.data.skin import BIN_NAMES, ita_bin
from mpoxscan.evaluation.metrics import POSITIVE, screening_threshold, tone_metrics
from mpoxscan.training.cv import kept_rows
from mpoxscan.training.features import FeatureCache
from mpoxscan.training.finetune import tone_balance_weights

HERE = Path(__file__).resolve().parent


def pooled(cache: FeatureCache, name: str, shas: list[str]) -> np.ndarray:
    table = cache.load(name)
    acts = np.stack([table[s] for s in shas]).astype(np.float32)  # (n, C, h, w)
    return np.concatenate([acts.mean((2, 3)), acts.std((2, 3))], axis=1)


def main() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", type=Path, default=Path("runs/msld2-10fold/manifest.csv"))
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--block", type=int, default=11)
    ap.add_argument("--C", type=float, default=0.05)
    ap.add_argument("--views", type=int, default=1, help="augmented training views (the finetune recipe uses 4)")
    ap.add_argument("--variants", default="none,tone_balance,tone_views,both")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "tone")
    args = ap.parse_args()
    rows = kept_rows(args.manifest)
    classes = sorted({r.label for r in rows})
    shas = [r.sha256 for r in rows]
    cache = FeatureCache(args.cache)
    stem = f"activations/efficientnet_lite0/block{args.block}-view"
    x0 = pooled(cache, f"{stem}0-seed0", shas)
    plain = [pooled(cache, f"{stem}{v}-seed0", shas) for v in range(1, args.views + 1)]
    toned = [pooled(cache, f"{stem}{v}-seed0-tone", shas) for v in range(1, args.views + 1)]
    y = np.array([classes.index(r.label) for r in rows])
    ita = [row_ita(r) for r in rows]
    bins = [ita_bin(v) for v in ita]
    folds = np.array([r.fold for r in rows])
    variants = {"none": (False, False), "tone_balance": (True, False), "tone_views": (False, True), "both": (True, True)}
    variants = {k: variants[k] for k in args.variants.split(",")}
    measured = {}
    for name, (balance, tone) in variants.items():
        proba = np.zeros((len(rows), len(classes)))
        for f in sorted(set(folds), key=int):
            tr, te = np.flatnonzero(folds != f), np.flatnonzero(folds == f)
            w = tone_balance_weights([rows[k].label for k in tr], [bins[k] for k in tr]) if balance else np.ones(len(tr))
            X = np.concatenate([x0[tr]] + [x[tr] for x in (toned if tone else plain)])
            n_views = 1 + args.views
            clf = make_pipeline(StandardScaler(), LogisticRegression(C=args.C, class_weight="balanced", max_iter=3000))
            clf.fit(X, np.concatenate([y[tr]] * n_views), logisticregression__sample_weight=np.concatenate([w] * n_views))
            proba[te] = clf.predict_proba(x0[te])
        labels = [r.label for r in rows]
        is_pos = np.array([lab == POSITIVE for lab in labels])
        t = screening_threshold(is_pos, proba[:, classes.index(POSITIVE)], 0.95)
        m = tone_metrics(labels, proba, classes, ita, t)
        m["accuracy"] = float((proba.argmax(1) == y).mean())
        measured[name] = m
    (args.out).mkdir(parents=True, exist_ok=True)
    stem = "proxy" if args.views == 1 else f"proxy-views{args.views}"
    (args.out / f"{stem}.json").write_text(json.dumps(measured, indent=2))
    (args.out / f"{stem}.md").write_text(markdown(measured, classes, args.views))
    print(markdown(measured, classes, args.views))


def markdown(measured: dict, classes: list[str], views: int = 1) -> str:
    """proxy.md from the measured figures (also: ``markdown(json.load(proxy.json), classes)``)."""
    first = next(iter(measured.values()))["bins"]
    lines = ["# Skin-tone mitigations: quick proxy (logistic regression on pooled frozen activations)", "",
             (__doc__ or "").split("\n\n")[2].replace("\n", " "), "",
             "The data: " + ", ".join(f"{b} {v['n']} photos ({100 * v['n_positive'] / max(v['n'], 1):.0f} % mpox)"
                                      for b, v in first.items()) + ". With about 35 non-mpox dark photos, a bin's "
             "specificity has a standard error near 8 points: differences of a few points between variants are noise.", "",
             f"Trained on the plain view and {views} augmented view(s) (plain or skin-toned); pooled out-of-fold, 10 "
             "folds, one threshold for >= 95 % sensitivity.", "",
             "| variant | accuracy % | " + " | ".join(f"spec. {b} %" for b in BIN_NAMES) + " | gap (points) | pooled rho | "
             + " | ".join(f"rho {c}" for c in classes if c != POSITIVE) + " |", "|" + "---|" * (4 + len(BIN_NAMES) + len(classes) - 1)]
    for name, m in measured.items():
        c = m["ita_vs_p_positive"]
        lines.append(f"| {name} | {100 * m['accuracy']:.1f} | " + " | ".join(f"{100 * m['bins'][b]['specificity']:.1f}" for b in BIN_NAMES)
                     + f" | {100 * m['specificity_gap']['gap']:+.1f} | {c['pooled_within_class']['rho']:+.3f} | "
                     + " | ".join(f"{c['per_class'][k]['rho']:+.2f}" for k in classes if k in c["per_class"]) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
