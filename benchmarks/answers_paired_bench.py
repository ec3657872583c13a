"""Two leave-one-site-out runs' answers, paired photo by photo: what the whole answer rule said before and after a
change (issue 26: "real close-ups of skin answered 'cannot tell' <= 10 %").

Each run's `answers.csv` (written by `benchmarks/pool_bench.py` from `mpoxscan cv --answers`) holds, per left-out
photo, the answer of the fold's own exported file: positive, negative or cannot tell, with its reason. Matched by
site and SHA-256, per site and class: the share answered "cannot tell" and the share flagged positive by each run,
the reasons behind "cannot tell", and McNemar's exact test (evaluation/metrics.py) on the photos where the two runs
answer "cannot tell" differently. Where both runs' `oof_predictions.csv` are there, also how far the two runs'
P(mpox) agree per site, and the AUC of each and of both averaged.

    PYTHONPATH=src .venv/bin/python benchmarks/answers_paired_bench.py \\
        --before benchmarks/results/pool/finetune-loso-20261207 --after benchmarks/results/pool/finetune-loso \\
        --out benchmarks/results/pool/answers-paired

Writes answers-paired.json, .md and a plot (.png) of each site's "cannot tell" share, before and after.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np

from mpoxscan.evaluation.metrics import POSITIVE, mcnemar, rank_auc

REPO = Path(__file__).resolve().parent.parent


def read_answers(folder: Path) -> dict[tuple[str, str], dict]:
    """{(site, sha256): row} of a run's answers.csv."""
    with open(folder / "answers.csv", newline="") as fh:
        return {(r["fold"], r["sha256"]): r for r in csv.DictReader(fh)}


def compare(before: dict, after: dict) -> dict:
    """Per site (and per site and class) the paired figures on the photos both runs answered."""
    common = sorted(set(before) & set(after))
    out: dict = {"photos": len(common), "only_before": len(set(before) - set(after)),
                 "only_after": len(set(after) - set(before)), "sites": {}}
    groups: dict[tuple[str, str | None], list] = {}
    for key in common:
        site, label = key[0], after[key]["label"]
        groups.setdefault((site, None), []).append(key)
        groups.setdefault((site, label), []).append(key)
    for (site, label), keys in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        refused = [np.array([run[k]["answer"] == "cannot tell" for k in keys]) for run in (before, after)]
        flagged = [np.array([run[k]["answer"] == "positive" for k in keys]) for run in (before, after)]
        entry = {"n": len(keys),
                 "cannot_tell": [round(float(r.mean()), 4) for r in refused],
                 "flagged": [round(float(f.mean()), 4) for f in flagged],
                 "cannot_tell_test": mcnemar(*refused),
                 "reasons": [dict(Counter(run[k]["reason"] for k in keys if run[k]["answer"] == "cannot tell")
                                  .most_common()) for run in (before, after)]}
        site_entry = out["sites"].setdefault(site, {"classes": {}})
        if label is None:
            site_entry["all"] = entry
        else:
            site_entry["classes"][label] = entry
    return out


def read_p(folder: Path) -> dict[tuple[str, str], tuple[str, float]]:
    """{(site, sha256): (label, P(mpox))} from a run's oof_predictions.csv."""
    with open(folder / "oof_predictions.csv", newline="") as fh:
        return {(r["fold"], r["sha256"]): (r["label"], float(r[f"p_{POSITIVE}"])) for r in csv.DictReader(fh)
                if r.get("variant", "main") == "main"}


def agreement(before: dict, after: dict) -> dict:
    """How far two runs of one recipe agree on each left-out site's photos: Spearman's rho between their P(mpox),
    each run's mpox-vs-rest AUC, and the AUC of the two runs averaged (mean log-odds), where the site has mpox."""
    from scipy.stats import spearmanr

    out = {}
    for site in sorted({k[0] for k in before}):
        keys = sorted(k for k in set(before) & set(after) if k[0] == site)
        p = np.array([[before[k][1], after[k][1]] for k in keys]).clip(1e-7, 1 - 1e-7)
        mpox = np.array([after[k][0] == POSITIVE for k in keys])
        entry = {"photos": len(keys), "spearman": round(float(spearmanr(p[:, 0], p[:, 1]).statistic), 4)}
        if 0 < mpox.sum() < len(mpox):
            logit = np.log(p / (1 - p))
            entry["auc"] = [round(rank_auc(mpox, p[:, 0]), 4), round(rank_auc(mpox, p[:, 1]), 4),
                            round(rank_auc(mpox, logit.mean(1)), 4)]
        out[site] = entry
    return out


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def write(result: dict, out: Path, names: tuple[str, str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "answers-paired.json").write_text(json.dumps({"runs": names, **result}, indent=2) + "\n")
    lines = ["## Leave-one-site-out answers, paired (benchmarks/answers_paired_bench.py)", "",
             f"Before: `{names[0]}`; after: `{names[1]}`. {result['photos']} photos answered by both (matched by site "
             f"and SHA-256; {result['only_before']} only before, {result['only_after']} only after). Each run's "
             "answers come from each fold's own exported file and whole rule. p: McNemar's exact test on the photos "
             "answered \"cannot tell\" by one run only.", "",
             "| site | class | photos | cannot tell, before | after | p | flagged, before | after | reasons after |",
             "|---|---|---|---|---|---|---|---|---|"]
    for site, entry in result["sites"].items():
        for label, e in [("all", entry["all"]), *entry["classes"].items()]:
            reasons = ", ".join(f"{r} {n}" for r, n in e["reasons"][1].items()) or "-"
            lines.append(f"| {site} | {label} | {e['n']} | {_pct(e['cannot_tell'][0])} | {_pct(e['cannot_tell'][1])} "
                         f"| {e['cannot_tell_test']['p_value']:.3g} | {_pct(e['flagged'][0])} | {_pct(e['flagged'][1])} "
                         f"| {reasons} |")
    if result.get("agreement"):
        lines += ["", "The two runs' P(mpox) on the same left-out photos (`oof_predictions.csv`): Spearman's rho, and "
                  "the mpox-vs-rest AUC of each run and of the two averaged (mean log-odds).", "",
                  "| site | photos | rho | AUC before | AUC after | AUC of both averaged |", "|---|---|---|---|---|---|"]
        for site, e in result["agreement"].items():
            auc = " | ".join(f"{a:.3f}" for a in e["auc"]) if "auc" in e else "- | - | -"
            lines.append(f"| {site} | {e['photos']} | {e['spearman']:.2f} | {auc} |")
    (out / "answers-paired.md").write_text("\n".join(lines) + "\n")
    _plot(result, out / "answers-paired.png")


def _plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(f"{site} {label}", e) for site, entry in result["sites"].items() for label, e in entry["classes"].items()
            if e["n"] >= 20]
    y = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(7, 0.32 * len(rows) + 1.2))
    ax.barh(y - 0.2, [100 * e["cannot_tell"][0] for _, e in rows], 0.4, label="before", color="#bbbbbb")
    ax.barh(y + 0.2, [100 * e["cannot_tell"][1] for _, e in rows], 0.4, label="after", color="#1f77b4")
    ax.axvline(10, color="k", lw=0.8, ls="--", label="aim: at most 10 %")
    ax.set_yticks(y, [name for name, _ in rows])
    ax.invert_yaxis()
    ax.set_xlabel("answered \"cannot tell\" (%), left-out site's photos (classes of at least 20 photos)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", type=Path, required=True, help="a folder holding answers.csv")
    ap.add_argument("--after", type=Path, required=True, help="a folder holding answers.csv")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "pool" / "answers-paired")
    args = ap.parse_args()
    for folder in (args.before, args.after):
        if not (folder / "answers.csv").is_file():
            raise SystemExit(f"error: {folder / 'answers.csv'} not found (a leave-one-site-out run's answers)")
    result = compare(read_answers(args.before), read_answers(args.after))
    if all((folder / "oof_predictions.csv").is_file() for folder in (args.before, args.after)):
        result["agreement"] = agreement(read_p(args.before), read_p(args.after))
    names = tuple(str(p.resolve().relative_to(REPO)) if p.resolve().is_relative_to(REPO) else str(p)
                  for p in (args.before, args.after))
    write(result, args.out, names)
    print(f"wrote {args.out / 'answers-paired.md'}")


if __name__ == "__main__":
    main()
