"""The shipped recipe on the pooled public data set under three protocols (issue 26), with every per-image file.

1. curate the pool (`mpoxscan curate --pool public`, 5 grouped folds stratified by class and source) into
   runs/pool/curated (skipped when its manifest is there);
2. cross-validate the recipe (`mpoxscan cv`, resumable) under each protocol:
   - official: MSLD v2.0's five splits, every other source on the training side only (minus the photos grouped
     with the split's valid or test photos): the figure comparable with the published 83.59 +- 2.11 %;
   - kfold: the pool's 5 grouped folds (stratified by class and source);
   - loso: leave one site out (MSLD, msid, viral-rash, hfmd, dermnet), each fold's model exported with the whole
     answer rule fitted on its own photos, every test photo's answer recorded (`cv --answers`);
3. copy into benchmarks/results/pool/<run>/ what lets anyone re-score every figure: results.json,
   oof_predictions.csv (test), valid_predictions.csv (inner validation), answers.csv (loso), config.json, and the
   curate report into benchmarks/results/pool/curate/;
4. write benchmarks/results/pool/pool.md: the tables the README and the model card quote.

    PYTHONPATH=src .venv/bin/python benchmarks/pool_bench.py [--data ../shared/data] [--only official,kfold,loso]
        [--model efficientnet_lite0] [--name finetune]

On this 2-core machine the first run caches the frozen blocks' activations of every photo (about 15 minutes for
Lite0's five views of the 3,227 files) and then trains 15 folds of about 2,000-2,300 photos.
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

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results" / "pool"
PROTOCOLS = ("official", "kfold", "loso")


def mpoxscan(*args: str) -> None:
    command = [sys.executable, "-m", "mpoxscan.cli", *args]
    print("$ mpoxscan " + " ".join(args), flush=True)
    subprocess.run(command, check=True)


def curated(data: Path, work: Path) -> Path:
    """The pool's manifest, curated once (the bundle curates the same way: deploy/bundle.py, pool_manifest)."""
    from mpoxscan.deploy.bundle import pool_manifest

    folder = work / "curated"
    if not (folder / "manifest.csv").exists():
        started = time.perf_counter()
        pool_manifest(data, folder)
        print(f"curated in {time.perf_counter() - started:.0f} s", flush=True)
    # benchmarks/results/pool/curate/ is the curation the bundled model learned from (the datasheet renders it and
    # tests/test_docs.py checks it against the card): written when missing, never replaced by a later curation,
    # which keep() records beside each run instead.
    target = RESULTS / "curate"
    if not (target / "report.json").exists():
        target.mkdir(parents=True, exist_ok=True)
        for name in ("report.json", "report.md", "duplicates.png", "conflicts.png"):
            if (folder / name).exists():
                shutil.copyfile(folder / name, target / name)
    return folder / "manifest.csv"


def valid_predictions(run: Path, target: Path) -> None:
    """Every fold's inner-validation predictions (cv writes them to predictions/valid/) as one CSV."""
    files = sorted((run / "predictions" / "valid").glob("*.csv"))
    with open(target, "w", newline="") as out:
        writer = None
        for path in files:
            fold = path.stem.split("__")[-1]
            with open(path, newline="") as fh:
                for row in csv.DictReader(fh):
                    if writer is None:
                        writer = csv.DictWriter(out, ["fold", *row])
                        writer.writeheader()
                    writer.writerow({"fold": fold, **row})


def answers(run: Path, target: Path) -> None:
    files = sorted((run / "predictions" / "answers").glob("*.csv"))
    with open(target, "w", newline="") as out:
        writer = None
        for path in files:
            fold = path.stem.split("__")[-1]
            with open(path, newline="") as fh:
                for row in csv.DictReader(fh):
                    if writer is None:
                        writer = csv.DictWriter(out, ["fold", *row])
                        writer.writeheader()
                    writer.writerow({"fold": fold, **row})


def keep(run: Path, name: str) -> Path:
    target = RESULTS / name
    target.mkdir(parents=True, exist_ok=True)
    for file in ("results.json", "oof_predictions.csv", "config.json"):
        shutil.copyfile(run / file, target / file)
    curation = Path(json.loads((run / "config.json").read_text())["manifest"]).parent
    for file in ("report.json", "report.md"):  # the curation this run's manifest came from
        if (curation / file).exists():
            shutil.copyfile(curation / file, target / f"curate-{file}")
    valid_predictions(run, target / "valid_predictions.csv")
    if list((run / "predictions" / "answers").glob("*.csv")):
        answers(run, target / "answers.csv")
    return target


def _ci(entry: dict, percent: bool = True) -> str:
    scale, unit, digits = (100, " %", 1) if percent else (1, "", 3)
    lo, hi = entry["ci95"]
    return f"{scale * entry['value']:.{digits}f}{unit} [{scale * lo:.{digits}f}, {scale * hi:.{digits}f}]"


def write_report(folder: Path, name: str = "finetune") -> dict:
    """pool.md and pool.json: the operating point (from the kfold run's out-of-fold predictions) and every
    protocol's figures at it; the leave-one-site-out answers under each fold's own rule."""
    from mpoxscan.evaluation.operating import figures_at, operating_point, read_predictions

    kfold = folder / f"{name}-kfold" / "oof_predictions.csv"
    if not kfold.exists():
        raise SystemExit(f"{kfold} is missing: run --only kfold first (the operating point comes from it)")
    point = operating_point(read_predictions(kfold))
    summary: dict = {"operating_point": {**point, "source": str(kfold.relative_to(REPO))}, "protocols": {}}
    lines = ["## The recipe on the pooled public data (benchmarks/pool_bench.py)", "",
             f"Operating point: P(mpox) >= **{point['threshold']:.4f}**, the highest threshold that flags 95 % of the "
             f"{point['n_positive']} mpox photos among the {point['n_images']} out-of-fold predictions of the 5 grouped "
             f"folds; at it, sensitivity {_ci(point['sensitivity'])}, specificity {_ci(point['specificity'])} "
             "(95 % group-level bootstrap intervals; the threshold fixed, the photos resampled).", ""]
    for protocol in PROTOCOLS:
        run = folder / f"{name}-{protocol}"
        if not (run / "results.json").exists():
            continue
        results = json.loads((run / "results.json").read_text())
        model, entry = next(iter(results["models"].items()))
        pred = read_predictions(run / "oof_predictions.csv")
        at = figures_at(pred, point["threshold"])
        fold_mean = entry["summary"]["accuracy"]
        summary["protocols"][protocol] = {"model": model, "folds": [f["fold"] for f in entry["folds"]],
                                          "fold_accuracy": fold_mean, "at_operating_point": at,
                                          "per_fold": {f["fold"]: {k: f["metrics"].get(k) for k in ("accuracy", "macro_f1")}
                                                       | {"screening_auc": f["metrics"].get("screening", {}).get("auc"),
                                                          "n_test": f["info"]["n_test"], "n_train": f["info"]["n_train"]}
                                                       for f in entry["folds"]},
                                          "answers": entry.get("answers")}
        m = at["metrics"]
        lines += [f"### {protocol} ({len(entry['folds'])} folds, {model})", "",
                  f"Accuracy over folds {100 * fold_mean['mean']:.2f} +- {100 * fold_mean['sd']:.2f} %; pooled "
                  f"{_ci(m['accuracy'])}, macro-F1 {_ci(m['macro_f1'])}, mpox AUC {_ci(m['screening_auc'], False)}; "
                  f"at the operating point: sensitivity {_ci(m['sensitivity'])}, specificity {_ci(m['specificity'])}, "
                  + ", ".join(f"PPV at {100 * float(k.split('_')[-1]):g} % prevalence {_ci(v)}" for k, v in m.items()
                              if k.startswith("ppv_at")) + ".", "",
                  "| class | photos | flagged positive at the operating point |", "|---|---|---|"]
        lines += [f"| {c} | {v['n']} | {_ci(v['flagged'])} |" for c, v in at["per_class"].items()]
        if entry.get("answers"):
            sites: dict[str, list[str]] = {}
            for site, classes in entry["answers"]["per_fold"].items():
                for c in classes:
                    sites.setdefault(c, []).append(site)
            alone = [f"{c} ({s[0]})" for c, s in sorted(sites.items()) if len(s) == 1]
            if alone:
                lines += ["", f"Classes that only one site has: {', '.join(alone)}. When that site is left out, the "
                          "model has never seen the class, so its row above measures a model without it; the "
                          "per-site table below is the one to read."]
        lines += ["", "| fold | train | test | accuracy % | mpox AUC |", "|---|---|---|---|---|"]
        for fold, f in summary["protocols"][protocol]["per_fold"].items():
            auc = f"{f['screening_auc']:.3f}" if f["screening_auc"] is not None else "-"
            lines.append(f"| {fold} | {f['n_train']} | {f['n_test']} | {100 * f['accuracy']:.1f} | {auc} |")
        if entry.get("answers"):
            lines += ["", "What the whole answer rule said to each left-out site's photos (each fold's own file: "
                      "the rule that ships, fitted on the other sites' photos; threshold from its inner validation):", "",
                      "| site | class | photos | flagged positive | cannot tell |", "|---|---|---|---|---|"]
            for site, classes in entry["answers"]["per_fold"].items():
                lines += [f"| {site} | {c} | {v['n']} | {_ci(v['flagged'])} | {_ci(v['cannot_tell'])} |"
                          for c, v in classes.items()]
        lines.append("")
    (folder / "pool.md").write_text("\n".join(lines) + "\n")
    (folder / "pool.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "pool")
    ap.add_argument("--only", default=",".join(PROTOCOLS))
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--name", default="finetune", help="run names: <name>-<protocol>")
    ap.add_argument("cv_args", nargs="*", help="more `mpoxscan cv` options after --, e.g. -- --tone-balance")
    args = ap.parse_args()
    manifest = curated(args.data.resolve(), args.work)
    for protocol in args.only.split(","):
        name = f"{args.name}-{protocol}"
        run = args.work / name
        started = time.perf_counter()
        mpoxscan("cv", "--manifest", str(manifest), "--models", args.model, "--strategy", "finetune",
                 "--protocol", protocol, "--out", str(run), "--quiet", *(["--answers"] if protocol == "loso" else []),
                 *args.cv_args)
        print(f"{name}: {time.perf_counter() - started:.0f} s", flush=True)
        keep(run, name)
    if (RESULTS / f"{args.name}-kfold").is_dir():
        write_report(RESULTS, args.name)
    else:  # a variant run under one protocol only (e.g. --only loso --name balance -- --tone-balance)
        print(f"no {args.name}-kfold run, so no pool report (its operating point comes from that run): "
              f"compare the runs with benchmarks/tone_bench.py or benchmarks/rescore.py", flush=True)


if __name__ == "__main__":
    main()
