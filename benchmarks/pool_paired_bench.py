"""The pooled recipe against the MSLD-only recipe, paired on the same photos (issue 26).

Both runs predicted every MSLD v2.0 photo out of fold (grouped folds: no photo, copy or patient on both sides):
`benchmarks/results/cv/finetune-10fold` (trained on MSLD v2.0 alone, 6 classes) and
`benchmarks/results/pool/finetune-kfold` (trained on the pool, 8 classes). Matched by SHA-256, each photo gets two
answers, each model at its own operating point: the highest P(mpox) that flags 95 % of the mpox photos among that
run's own pooled out-of-fold predictions (`evaluation/operating.py`), as each would ship. Per class, the share flagged
positive by each, and McNemar's exact test on the photos where they disagree (scipy's binomial test on the discordant
pairs); accuracy likewise (the same photo right by one, wrong by the other).

    PYTHONPATH=src .venv/bin/python benchmarks/pool_paired_bench.py

Writes benchmarks/results/pool/paired.json and paired.md; the same on MSLD v2.0's official splits (the runs
`benchmarks/results/cv/finetune-official` and `benchmarks/results/pool/finetune-official`) to paired-official.*.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mpoxscan.evaluation.metrics import mcnemar
from mpoxscan.evaluation.operating import operating_point, read_predictions

REPO = Path(__file__).resolve().parent.parent
RUNS = {"msld-only": REPO / "benchmarks/results/cv/finetune-10fold/oof_predictions.csv",
        "pool": REPO / "benchmarks/results/pool/finetune-kfold/oof_predictions.csv"}
#: MSLD v2.0's official 5 splits: the same test photos, trained on MSLD v2.0 alone or with the pool's other sources.
OFFICIAL = {"msld-only": REPO / "benchmarks/results/cv/finetune-official/oof_predictions.csv",
            "pool": REPO / "benchmarks/results/pool/finetune-official/oof_predictions.csv"}
OUT = REPO / "benchmarks/results/pool"


def _sha_order(path: Path) -> list[str]:
    import csv

    with open(path, newline="") as fh:
        return [r["sha256"] for r in csv.DictReader(fh) if r["variant"] == "main"]


def compare(paths: dict[str, Path] = RUNS) -> dict:
    runs = {}
    for name, path in paths.items():
        pred = read_predictions(path)
        point = operating_point(pred, n_boot=0)  # the threshold each run would ship; intervals are not needed here
        flagged = pred.positive() >= point["threshold"]
        correct = np.array([pred.classes[k] == y for k, y in zip(pred.proba.argmax(1), pred.labels)])
        runs[name] = {"threshold": point["threshold"], "by_sha": {s: (y, f, c) for s, y, f, c in
                                                                 zip(_sha_order(path), pred.labels, flagged, correct)}}
    first, second = runs["msld-only"], runs["pool"]
    common = sorted(set(first["by_sha"]) & set(second["by_sha"]))
    labels = np.array([first["by_sha"][s][0] for s in common])
    if any(second["by_sha"][s][0] != y for s, y in zip(common, labels)):
        raise SystemExit("the two runs label a shared photo differently")
    out = {"photos": len(common), "thresholds": {k: v["threshold"] for k, v in runs.items()},
           "note": "each run at its own operating point (95 % of its own out-of-fold mpox photos flagged); "
                   "McNemar's exact test on the discordant photos", "per_class": {}}
    for cls in sorted(set(labels)):
        keep = labels == cls
        a = np.array([first["by_sha"][s][1] for s in common])[keep]
        b = np.array([second["by_sha"][s][1] for s in common])[keep]
        out["per_class"][cls] = {"n": int(keep.sum()), "flagged_msld_only": float(a.mean()),
                                 "flagged_pool": float(b.mean()), **mcnemar(a, b)}
    a = np.array([first["by_sha"][s][2] for s in common])
    b = np.array([second["by_sha"][s][2] for s in common])
    out["accuracy"] = {"msld_only": float(a.mean()), "pool": float(b.mean()), **mcnemar(a, b)}
    return out


def report(out: dict, official: bool = False) -> str:
    t = out["thresholds"]
    which = ("MSLD v2.0's official 5 splits: the test photos of its 5 test sides, predicted by each split's model"
             if official else "the MSLD v2.0 photos that both grouped cross-validations predicted out of fold")
    lines = [f"## The pooled model against the MSLD-only model, paired{', official splits' if official else ''} "
             "(benchmarks/pool_paired_bench.py)", "",
             f"{out['photos']} photos, {which}; each "
             f"model at its own operating point (MSLD-only: P(mpox) >= {t['msld-only']:.4f}; pool: >= "
             f"{t['pool']:.4f}; each flags 95 % of its own run's out-of-fold mpox photos). McNemar's exact test on "
             "the photos where the two disagree.", "",
             "| class | photos | flagged, MSLD-only | flagged, pool | only MSLD-only flags | only pool flags | p |",
             "|---|---|---|---|---|---|---|"]
    for cls, v in out["per_class"].items():
        lines.append(f"| {cls} | {v['n']} | {100 * v['flagged_msld_only']:.1f} % | {100 * v['flagged_pool']:.1f} % "
                     f"| {v['only_first']} | {v['only_second']} | {v['p_value']:.3g} |")
    a = out["accuracy"]
    lines += ["", f"Accuracy (top-1 class) on the same photos: MSLD-only {100 * a['msld_only']:.1f} %, pool "
              f"{100 * a['pool']:.1f} % ({a['only_first']} photos right only by the MSLD-only model, "
              f"{a['only_second']} only by the pooled one; p = {a['p_value']:.3g}). The pooled model also chooses "
              "among Acne and OtherRash, which the MSLD-only one cannot answer.", ""]
    return "\n".join(lines)


def main() -> None:
    for name, paths, official in (("paired", RUNS, False), ("paired-official", OFFICIAL, True)):
        out = compare(paths)
        (OUT / f"{name}.json").write_text(json.dumps(out, indent=2) + "\n")
        (OUT / f"{name}.md").write_text(report(out, official))
        print(report(out, official))


if __name__ == "__main__":
    main()
