"""Score an ensemble of finished `mpoxscan cv` runs (the same protocol and folds, e.g. one recipe at several seeds).

    PYTHONPATH=src .venv/bin/python benchmarks/ensemble_bench.py --name finetune-seeds-official \
        --run runs/bench/finetune-official --run runs/bench/finetune-official-seed1 --run runs/bench/finetune-official-seed2

Per fold, the members' calibrated test probabilities are averaged, and the ensemble's screening threshold (95 %
mpox sensitivity) is chosen on the average of the members' inner-validation probabilities (`predictions/valid/`),
as `cv` chooses a single model's: nothing is fitted on a test fold. Where the members' inner validation photos
differ (k-fold runs at different seeds), the photos common to all of them (none of the members trained on them) are
used, or, with fewer than 10 mpox photos among them, the mean of the members' own thresholds. Writes
benchmarks/results/ensemble/NAME.md and NAME.json: each member alone, then the first 2, 3, ... averaged (mean and sd
over folds, pooled out-of-fold accuracy with its patient-level bootstrap CI). With --per-fold (for leave one site
out, where each fold is a site the runs never saw), also each fold's mpox AUC of every run and of their average,
the average's gain over the runs' mean AUC on the same photos, and each class's share flagged, with a plot (NAME.png):

    PYTHONPATH=src .venv/bin/python benchmarks/ensemble_bench.py --name finetune-seeds-loso --per-fold \
        --run runs/pool/finetune-loso --run runs/pool/finetune-loso-seed1
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from mpoxscan.data.manifest import kept_rows
from mpoxscan.evaluation.metrics import (POSITIVE, classification_metrics, mean_sd_ci, patient_bootstrap,
                                         pooled_summary, rank_auc, screening_threshold)
from mpoxscan.training.cv import make_splits, read_fold_keys

RESULTS = Path(__file__).resolve().parent / "results" / "ensemble"


def member_folds(run: Path, model: str) -> tuple[dict, dict]:
    """(config, {fold: (test, valid)}) of one run; test and valid are read_fold_keys tuples."""
    config = json.loads((run / "config.json").read_text())
    results = json.loads((run / "results.json").read_text())
    classes = results["classes"]
    folds = {}
    for split in make_splits(kept_rows(Path(config["manifest"])), config["protocol"], config["seed"]):
        stem = f"{model}__{config['strategy']}__{split.name}"
        test = read_fold_keys(run / "predictions", stem, classes)
        valid = read_fold_keys(run / "predictions" / "valid", stem, classes)
        if test is None and valid is None:
            continue  # a fold the run did not train (cv --only-folds, a GPU call stopped at its time budget)
        if test is None or valid is None:
            raise SystemExit(f"{run}: fold {split.name} lacks its test or inner-validation predictions")
        folds[split.name] = (test, valid)
    if not folds:
        raise SystemExit(f"{run}: no fold of {model} has predictions")
    return {**config, "classes": classes}, folds


def shas(fold: tuple) -> list[str]:
    """The photos of a read_fold_keys tuple, in order, by content."""
    return [sha for sha, _ in fold[3]]


#: The fewest mpox photos a 95 %-sensitivity threshold is chosen on (one miss moves it by 1 / n).
MIN_SHARED_POSITIVES = 10


def shared_threshold(valids: list[tuple], k: int) -> tuple[float | None, str]:
    """The ensemble's screening threshold from the inner-validation photos of every member (none of the members
    trained on them): the whole inner validation when the members share it (the official splits, or one seed), else
    the photos common to all (k-fold runs at different seeds hold out different patients); None when fewer than
    ``MIN_SHARED_POSITIVES`` of those are mpox."""
    common = set.intersection(*(set(shas(v)) for v in valids))
    order = [sha for sha in shas(valids[0]) if sha in common]
    at = [{sha: i for i, sha in enumerate(shas(v))} for v in valids]
    p_valid = np.mean([v[1][[a[sha] for sha in order]] for v, a in zip(valids, at)], axis=0)
    y_valid = np.array([valids[0][0][at[0][sha]] == POSITIVE for sha in order])
    if y_valid.sum() < MIN_SHARED_POSITIVES:
        return None, ""
    shared = len(order) == len(shas(valids[0])) and all(len(shas(v)) == len(order) for v in valids)
    return screening_threshold(y_valid, p_valid[:, k]), ("averaged inner validation" if shared else
                                                         "inner-validation photos common to all members")


def fold_of(members: list[tuple[dict, dict]], fold: str) -> tuple[list[tuple], list[tuple | None]]:
    """The members' (test, inner-validation) predictions of one fold; an error unless they tested the same photos
    (compared by content: a GPU run reads its copy of the photos, .gpu/, a CPU run ../shared/data)."""
    tests = [m[1][fold][0] for m in members]
    if any(shas(t) != shas(tests[0]) for t in tests):
        raise SystemExit(f"fold {fold}: the runs do not share their test photos")
    return tests, [m[1][fold][1] for m in members]


def fold_threshold(tests: list[tuple], valids: list[tuple | None], k: int) -> tuple[float | None, str]:
    """One fold's screening threshold for the members' averaged probabilities, and how it was chosen: from their
    inner validation only, never from the test fold."""
    if any(v is None for v in valids):
        # Re-scoring from committed files (benchmarks/rescore.py) where a member's inner-validation predictions
        # were not kept: a run alone keeps the threshold its fold chose; an ensemble's cannot be chosen, so its
        # sensitivity and specificity are not scored (NaN), never scored at a stand-in threshold.
        return ((tests[0][2]["threshold"], "the run's own") if len(tests) == 1 else
                (None, "not scored: inner-validation predictions not committed"))
    threshold, how = shared_threshold(valids, k)
    if threshold is None:
        # Too few mpox photos lie in every member's inner validation to choose a 95 %-sensitivity point: the
        # members' own thresholds (each from its own inner validation) are averaged; nothing from the test fold.
        threshold, how = float(np.mean([v[2]["threshold"] for v in valids])), "members' own, averaged"
    return threshold, how


def score(members: list[tuple[dict, dict]], rows_by_sha: dict, n_boot: int = 2000) -> dict:
    """Fold metrics and pooled statistics of the members' averaged probabilities (``n_boot`` bootstrap draws for
    the pooled intervals; 0: the point values alone)."""
    classes = members[0][0]["classes"]
    k = classes.index(POSITIVE)
    per_fold, labels, proba, groups, thresholds, hows = [], [], [], [], [], []
    for fold in members[0][1]:
        tests, valids = fold_of(members, fold)
        p_test = np.mean([t[1] for t in tests], axis=0)
        threshold, how = fold_threshold(tests, valids, k)
        hows.append(how)
        fold_metrics = classification_metrics(tests[0][0], p_test, classes, threshold=threshold)
        if threshold is None:
            fold_metrics["screening"].update(sensitivity=float("nan"), specificity=float("nan"))
        per_fold.append(fold_metrics)
        labels += tests[0][0]
        proba.append(p_test)
        groups += [rows_by_sha[sha].group for sha, _ in tests[0][3]]
        thresholds += [threshold] * len(p_test)
    scored = all(t is not None for t in thresholds)
    pooled = pooled_summary(labels, np.concatenate(proba), classes, groups,
                            np.array(thresholds, float) if scored else None, n_boot=n_boot)
    return {"folds": len(per_fold), "threshold": sorted(set(hows)),
            "accuracy": mean_sd_ci([f["accuracy"] for f in per_fold]),
            "macro_f1": mean_sd_ci([f["macro_f1"] for f in per_fold]),
            # A fold without mpox photos (a site left out that has none) has no AUC: the mean is over the others.
            "screening_auc": mean_sd_ci([f["screening"].get("auc", float("nan")) for f in per_fold]),
            "screening_sensitivity": mean_sd_ci([f["screening"]["sensitivity"] for f in per_fold]),
            "screening_specificity": mean_sd_ci([f["screening"]["specificity"] for f in per_fold]),
            "per_fold_accuracy": [round(f["accuracy"], 4) for f in per_fold],
            "pooled_accuracy": pooled["metrics"]["accuracy"], "pooled_ece": pooled["ece"]}


def per_fold(members: list[tuple[dict, dict]], names: list[str], rows_by_sha: dict, n_boot: int = 1000,
             seed: int = 0) -> dict:
    """Fold by fold (leave one site out: site by site), each member alone and the members averaged: the mpox AUC,
    the averaged AUC minus the members' mean AUC (what averaging buys over one run, on the same photos, with a
    bootstrap interval drawing whole groups), how far the members' P(mpox) agree (Spearman), and at each one's own
    threshold the share of every class flagged (P(mpox) at or above it, before the "cannot tell" rule)."""
    from scipy.stats import spearmanr

    classes = members[0][0]["classes"]
    k = classes.index(POSITIVE)
    out = {}
    for fold in members[0][1]:
        tests, valids = fold_of(members, fold)
        labels = np.array(tests[0][0])
        scores = {name: t[1][:, k] for name, t in zip(names, tests)}
        scores["averaged"] = np.mean([t[1][:, k] for t in tests], axis=0)
        thresholds = {name: fold_threshold([t], [v], k)[0] for name, t, v in zip(names, tests, valids)}
        thresholds["averaged"] = fold_threshold(tests, valids, k)[0]
        positive = labels == POSITIVE
        entry: dict = {"photos": int(len(labels)), "mpox": int(positive.sum()),
                       "threshold": thresholds,
                       "flagged": {name: {c: float((scores[name][labels == c] >= t).mean())
                                          for c in classes if (labels == c).any()}
                                   for name, t in thresholds.items() if t is not None},
                       "spearman": float(np.mean([spearmanr(scores[a], scores[b]).statistic
                                                  for i, a in enumerate(names) for b in names[i + 1:]]))}
        if 0 < positive.sum() < len(positive):
            def statistic(index: np.ndarray) -> dict[str, float]:
                pos = positive[index]
                if pos.all() or not pos.any():
                    return {name: float("nan") for name in [*scores, "gain"]}
                auc = {name: rank_auc(pos, s[index]) for name, s in scores.items()}
                return auc | {"gain": auc["averaged"] - float(np.mean([auc[n] for n in names]))}

            groups = [rows_by_sha[sha].group for sha, _ in tests[0][3]]
            boot = patient_bootstrap(groups, statistic, n_boot=n_boot, seed=seed)
            entry["auc"] = {name: boot[name] for name in scores}
            entry["averaged_minus_members_mean"] = boot["gain"]
        out[fold] = entry
    return out


def per_fold_lines(folds: dict, names: list[str]) -> list[str]:
    """The markdown of :func:`per_fold`."""
    ci = lambda e, f="{:.3f}": f"{f.format(e['value'])} [{f.format(e['ci95'][0])}, {f.format(e['ci95'][1])}]"  # noqa: E731
    lines = ["## Fold by fold (leave one site out: the site left out)", "",
             "mpox AUC of each run and of the runs averaged, the averaged AUC minus the runs' mean AUC (95 % interval "
             "from a bootstrap that draws whole groups of the same photos), and the Spearman correlation of the runs' "
             "P(mpox) on the fold's photos.", "",
             "| fold | photos (mpox) | " + " | ".join(f"AUC {n}" for n in names) + " | AUC averaged | averaged - "
             "mean of runs | Spearman |", "|---|---|" + "---|" * (len(names) + 3)]
    for fold, e in folds.items():
        if "auc" not in e:
            aucs, gain = ["-"] * (len(names) + 1), "-"
        else:
            aucs = [f"{e['auc'][n]['value']:.3f}" for n in names] + [ci(e["auc"]["averaged"])]
            gain = ci(e["averaged_minus_members_mean"], "{:+.3f}")
        lines.append(f"| {fold} | {e['photos']} ({e['mpox']}) | " + " | ".join(aucs) + f" | {gain} | "
                     f"{e['spearman']:.2f} |")
    lines += ["", "Share of each class flagged (P(mpox) at or above each one's own threshold, chosen on its inner "
              "validation for 95 % sensitivity; before the \"cannot tell\" rule), %: " + ", ".join(names)
              + ", averaged.", "", "| fold | class | " + " | ".join(names) + " | averaged |",
              "|---|---|" + "---|" * (len(names) + 1)]
    for fold, e in folds.items():
        for c in e["flagged"].get("averaged", {}):
            lines.append(f"| {fold} | {c} | " + " | ".join(f"{100 * e['flagged'][n][c]:.1f}" if n in e["flagged"]
                                                           else "-" for n in [*names, "averaged"]) + " |")
    return lines


def plot_per_fold(folds: dict, names: list[str], path: Path) -> None:
    """Each fold's mpox AUC: the runs alone (dots) and averaged (a bar with its interval)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [f for f, e in folds.items() if "auc" in e]
    fig, ax = plt.subplots(figsize=(1.6 * len(shown) + 2, 3.6))
    x = np.arange(len(shown))
    avg = [folds[f]["auc"]["averaged"] for f in shown]
    ax.bar(x, [a["value"] for a in avg], width=0.5, color="#9ecae1", label="runs averaged",
           yerr=np.array([[a["value"] - a["ci95"][0], a["ci95"][1] - a["value"]] for a in avg]).T, capsize=4)
    for i, n in enumerate(names):
        ax.scatter(x + (i - (len(names) - 1) / 2) * 0.12, [folds[f]["auc"][n]["value"] for f in shown],
                   zorder=3, s=22, label=n)
    ax.set_xticks(x, shown)
    ax.set_ylim(min(0.5, min(a["ci95"][0] for a in avg) - 0.05), 1.0)
    ax.set_ylabel("mpox AUC on the fold's photos")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", type=Path, required=True, help="A finished cv run (2 or more).")
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--name", required=True, help="The results' file name.")
    parser.add_argument("--per-fold", action="store_true", help="Also fold by fold (leave one site out: site by "
                        "site): each run's and the average's mpox AUC and share of each class flagged, and a plot.")
    args = parser.parse_args()
    if len(args.run) < 2:
        parser.error("give at least two --run")
    members = [member_folds(r, args.model) for r in args.run]
    differ = [r for r, m in zip(args.run, members) if list(m[1]) != list(members[0][1])]
    if differ:
        parser.error(f"{differ[0]} has other folds ({', '.join(members[args.run.index(differ[0])][1])}) than "
                     f"{args.run[0]} ({', '.join(members[0][1])}): an ensemble averages the same folds")
    rows_by_sha = {r.sha256: r for r in kept_rows(Path(members[0][0]["manifest"]))}
    table = {}
    for r, m in zip(args.run, members):
        table[f"{r.name} (seed {m[0]['seed']}) alone"] = score([m], rows_by_sha)
    for n in range(2, len(members) + 1):
        table[f"mean of the first {n}"] = score(members[:n], rows_by_sha)
    names = [r.name for r in args.run]
    folds = per_fold(members, names, rows_by_sha) if args.per_fold else None
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps({"runs": [str(r) for r in args.run], "rows": table,
                                                           **({"folds": folds} if folds else {})}, indent=2))
    pct = lambda d: f"{100 * d['mean']:.2f} ± {100 * d['sd']:.2f}"  # noqa: E731
    lines = [f"# Ensembles of `mpoxscan cv` runs: {args.name}", "",
             "Written by `benchmarks/ensemble_bench.py` " + " ".join(f"--run {r}" for r in args.run) + ". Mean ± sd "
             "over folds; sensitivity / specificity at each fold's threshold, chosen on the (averaged) inner "
             "validation for 95 % mpox sensitivity (where the members' inner validations differ, as for k-fold runs at "
             f"different seeds: \\* on the photos in all of them, \\*\\* the mean of the members' own thresholds where fewer "
             f"than {MIN_SHARED_POSITIVES} mpox photos are common to all); pooled accuracy with its patient-level bootstrap 95 % CI.", "",
             "| members | accuracy % | macro-F1 % | mpox AUC | sensitivity / specificity % | pooled accuracy % [95 % CI] | per-fold accuracy % |",
             "|---|---|---|---|---|---|---|"]
    for name, s in table.items():
        pa = s["pooled_accuracy"]
        star = ", ".join(mark for how, mark in (("inner-validation photos common to all members", "\\*"),
                                                ("members' own, averaged", "\\*\\*")) if how in s["threshold"])
        lines.append(f"| {name} | {pct(s['accuracy'])} | {pct(s['macro_f1'])} | {s['screening_auc']['mean']:.3f} | "
                     f"{100 * s['screening_sensitivity']['mean']:.1f} / {100 * s['screening_specificity']['mean']:.1f}{star} | "
                     f"{100 * pa['value']:.1f} [{100 * pa['ci95'][0]:.1f}, {100 * pa['ci95'][1]:.1f}] | "
                     + ", ".join(f"{100 * a:.1f}" for a in s["per_fold_accuracy"]) + " |")
    if folds:
        # The plot beside it, not linked: the documentation includes this file into pages elsewhere.
        lines += ["", *per_fold_lines(folds, names)]
        plot_per_fold(folds, names, RESULTS / f"{args.name}.png")
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
