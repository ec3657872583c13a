"""Issue 30, part 5: what expert-labelled cases add to the model, as a learning curve on a source it never saw.

One public source (by default viral-rash-2024) plays the service: its kept photos (as the pool's curation keeps
them) are split in two halves, grouped and stratified by class. The first half is sent as cases through the real
API with both consents and concluded by a simulated expert with their true labels, 5 % "unsure"
(benchmarks/expert_loop_bench.py), then exported (`mpoxscan cases export`). The other half is a fixed test set.
The pool without that source, plus the export as one more source, plus the test half, is curated once (copies and
patients grouped across all of them); test photos grouped with any other photo are dropped from the test set. The
shipped recipe is then trained on the pool without the source plus 0, 25, 50 and 100 % of the exported cases (nested
subsets) and each model, exported with its whole answer rule (`cv --answers`), answers the same test photos.

    PYTHONPATH=src .venv/bin/python benchmarks/expert_curve_bench.py [--source viral-rash] [--steps 0,25,50,100]

Writes benchmarks/results/expert_loop/curve.json, curve.md and curve.png, and each step's per-image files
(predictions, answers) under benchmarks/results/expert_loop/step-<s>/. Needs runs/pool/curated (pool_bench.py).
Time on this machine: about 10 minutes to send, conclude and export, then one training of the recipe per step.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
RESULTS = HERE / "results" / "expert_loop"
GROUP = r"^case-([0-9a-f]{20})_"  # docs/data/expert-cases.md: all photos of one case form one group


def halves(rows, site: str, seed: int):
    """(case half, test half) of the site's kept rows: whole groups, stratified by class."""
    from sklearn.model_selection import StratifiedGroupKFold

    mine = [r for r in rows if r.status == "kept" and (r.site or r.source) == site]
    split = StratifiedGroupKFold(n_splits=2, shuffle=True, random_state=seed)
    a, b = next(split.split(np.zeros(len(mine)), [r.label for r in mine], [r.group for r in mine]))
    return [mine[k] for k in a], [mine[k] for k in b]


def link_folder(rows, folder: Path) -> Path:
    """A curate source of symlinks, <label>/<source>__<file>."""
    for r in rows:
        target = folder / r.label / f"{r.source}__{Path(r.relpath).name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.symlink_to(r.path)
    return folder


def step_manifest(rows, cases: set[str], test_site: str, out: Path) -> tuple[int, int]:
    """A manifest whose fold 1 is the fixed test set and fold 2 the training side with only ``cases`` of the
    exported cases (by export id); returns (training photos, test photos)."""
    from dataclasses import replace

    from mpoxscan.data.manifest import write_manifest

    kept = [r for r in rows if r.status == "kept"]
    sites_of_group: dict[str, set[str]] = {}
    for r in kept:
        sites_of_group.setdefault(r.group, set()).add(r.site or r.source)
    test = {r.path for r in kept if (r.site or r.source) == test_site and sites_of_group[r.group] == {test_site}}

    def case_id(r) -> str:
        return Path(r.relpath).name.split("_")[0].removeprefix("case-")

    out_rows = []
    for r in rows:
        if r.status != "kept":
            out_rows.append(replace(r, fold=""))
        elif r.path in test:
            out_rows.append(replace(r, fold="1"))
        elif (r.site or r.source) == test_site or (r.source == "cases" and case_id(r) not in cases):
            out_rows.append(replace(r, status="rejected", reason="not in this step", fold=""))
        else:
            out_rows.append(replace(r, fold="2"))
    out.parent.mkdir(parents=True, exist_ok=True)
    write_manifest(out, out_rows)
    return sum(r.fold == "2" for r in out_rows), len(test)


def step_files(run: Path) -> tuple[Path, Path]:
    """(per-image predictions, per-image answers) of a step's one-fold cv run."""
    return (next(p for p in (run / "predictions").glob("*.csv")),
            next((run / "predictions" / "answers").glob("*.csv")))


def photos(predictions: Path, answers: Path) -> dict[str, dict]:
    """{test photo: label, group, answer (positive / negative / cannot tell), whether the top class is right}."""
    with open(predictions, newline="") as fh:
        preds = list(csv.DictReader(fh))
    with open(answers, newline="") as fh:
        said = {a["path"]: a["answer"] for a in csv.DictReader(fh)}
    classes = [c[2:] for c in preds[0] if c.startswith("p_")]
    if set(said) != {p["path"] for p in preds}:
        raise SystemExit(f"{predictions} and {answers} name different photos")
    return {p["path"]: {"label": p["label"], "group": p["group"], "answer": said[p["path"]],
                        "right": max(classes, key=lambda c: float(p[f"p_{c}"])) == p["label"]} for p in preds}


def curve_point(step: dict[str, dict], positive: str = "Monkeypox") -> dict:
    """Accuracy, mpox sensitivity, share of look-alikes flagged and share refused, with group-level bootstrap
    intervals (evaluation.metrics.patient_bootstrap), from :func:`photos`."""
    from mpoxscan.evaluation.metrics import patient_bootstrap

    rows = [step[p] for p in sorted(step)]
    correct = np.array([r["right"] for r in rows])
    said = np.array([r["answer"] for r in rows])
    mpox = np.array([r["label"] == positive for r in rows])

    def stat(index: np.ndarray) -> dict[str, float]:
        m, lab = mpox[index], said[index]
        return {"accuracy": float(correct[index].mean()),
                "mpox_sensitivity": float(np.mean(lab[m] == "positive")) if m.any() else float("nan"),
                "look_alikes_flagged": float(np.mean(lab[~m] == "positive")) if (~m).any() else float("nan"),
                "cannot_tell": float(np.mean(lab == "cannot tell"))}

    return {"n_test": len(rows), "n_mpox": int(mpox.sum()), **patient_bootstrap([r["group"] for r in rows], stat)}


def paired(first: dict[str, dict], later: dict[str, dict], positive: str = "Monkeypox") -> dict:
    """A later step against the first on the same test photos (evaluation.metrics.paired_screening; its "first" is
    the later step): exact McNemar tests of the top class right, mpox photos flagged and look-alikes not flagged."""
    from mpoxscan.evaluation.metrics import paired_screening

    if set(first) != set(later):
        raise SystemExit("two steps answered different test photos")
    paths = sorted(first)
    mpox = np.array([first[p]["label"] == positive for p in paths])
    flag_a, flag_b = (np.array([x[p]["answer"] == "positive" for p in paths]) for x in (later, first))
    right_a, right_b = (np.array([x[p]["right"] for p in paths]) for x in (later, first))
    return paired_screening(mpox, (right_a, right_b), (flag_a, flag_b))


def score(results: Path = RESULTS) -> dict:
    """Every step's point (and its paired tests against the first step) from the committed per-image files
    ``results/step-<s>/{predictions,answers}.csv``: what curve.json holds, recomputed."""
    steps = {int(d.name.split("-")[1]): photos(d / "predictions.csv", d / "answers.csv")
             for d in sorted(results.glob("step-*"))}
    first = min(steps)
    points = {s: curve_point(p) for s, p in steps.items()}
    for s in steps:
        if s != first:
            points[s][f"paired_with_step_{first}"] = paired(steps[first], steps[s])
    return points


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", default="viral-rash", help="the site that plays the service")
    ap.add_argument("--steps", default="0,25,50,100")
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "expert_curve")
    ap.add_argument("--pool", type=Path, default=REPO / "runs" / "pool" / "curated" / "manifest.csv")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    from expert_loop_bench import simulate

    from mpoxscan.data.curate import CurateOptions, curate, write_outputs
    from mpoxscan.data.manifest import read_manifest
    from mpoxscan.data.sources import Source, load_pool, pool_path

    rows = read_manifest(args.pool)
    case_half, test_half = halves(rows, args.source, args.seed)
    export = args.work / "export"
    if not (export / "_meta" / "cases.jsonl").exists():
        timings: dict = {}
        simulate([(Path(r.path), r.label) for r in case_half], export, unsure_share=0.05, seed=args.seed,
                 work=args.work / "service", timings=timings)
        (args.work / "service.json").write_text(json.dumps(timings, indent=2))
    curated = args.work / "curated"
    if not (curated / "manifest.csv").exists():
        sources, classes = load_pool(pool_path("public"), args.data.resolve())
        # the test half keeps its source's priority in the pool: where a public photo is in two sources, the copy
        # the pool kept is kept here too (at the lowest priority, most of the held-out source's photos that other
        # sources re-host would be dropped as copies, and its mpox test photos with them)
        priority = max(s.priority for s in sources if s.site_name == args.source)
        sources = [s for s in sources if s.site_name != args.source]
        sources += [Source("cases", export, GROUP, priority=0),
                    Source(args.source, link_folder(test_half, args.work / "heldout"), priority=priority)]
        opts = CurateOptions(n_folds=2, seed=args.seed, progress=False, classes=classes)
        write_outputs(curate(sources, opts), curated, opts, force=True)
    rows = read_manifest(curated / "manifest.csv")
    with open(export / "_meta" / "cases.jsonl") as fh:
        exported = [json.loads(line)["case"] for line in fh if line.strip()]
    order = list(np.random.default_rng(args.seed).permutation(sorted(set(exported))))
    # steps measured by an earlier run keep their sizes, so that a run of one more step (--steps 50) completes the
    # curve instead of replacing it
    earlier = RESULTS / "curve.json"
    sizes = {int(s): {k: p[k] for k in ("cases_added", "n_train")}
             for s, p in (json.loads(earlier.read_text())["points"].items() if earlier.exists() else [])}
    for step in [int(s) for s in args.steps.split(",")]:
        chosen = set(order[:round(step / 100 * len(order))])
        manifest = args.work / f"step-{step}" / "manifest.csv"
        n_train, n_test = step_manifest(rows, chosen, args.source, manifest)
        run = args.work / f"step-{step}" / "run"
        subprocess.run([sys.executable, "-m", "mpoxscan.cli", "cv", "--manifest", str(manifest), "--models",
                        "efficientnet_lite0", "--strategy", "finetune", "--protocol", "kfold", "--folds", "fold1",
                        "--answers", "--out", str(run), "--quiet"], check=True)
        keep = RESULTS / f"step-{step}"
        keep.mkdir(parents=True, exist_ok=True)
        predictions, answers = step_files(run)
        shutil.copyfile(predictions, keep / "predictions.csv")
        shutil.copyfile(answers, keep / "answers.csv")
        shutil.copyfile(run / "results.json", keep / "results.json")
        sizes[step] = {"cases_added": len(chosen), "n_train": n_train}
    points = {s: {**sizes[s], **p} for s, p in score().items() if s in sizes}
    for s, p in sorted(points.items()):
        print(s, json.dumps({k: v for k, v in p.items() if not k.startswith("paired")}), flush=True)
    write(points, args.source, len(case_half), len(exported))


def write(points: dict, source: str, sent: int, exported: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "curve.json").write_text(json.dumps({"source": source, "cases_sent": sent, "photos_exported": exported,
                                                    "points": points}, indent=2) + "\n")
    names = ("accuracy", "mpox_sensitivity", "look_alikes_flagged", "cannot_tell")
    lines = [f"# Expert-labelled cases as training data: the learning curve on {source}", "",
             f"{sent} photos of {source} sent as cases and concluded by a simulated expert (5 % unsure, never "
             f"exported); the pool without {source} plus the given share of the {exported} exported photos trains the "
             "shipped recipe; the same test photos (the other half of the source, grouped with nothing else) answered "
             "by each model's own file with its whole answer rule (threshold from its own inner validation). 95 % "
             "group-level bootstrap intervals.", "",
             f"The test set: {next(iter(points.values()))['n_test']} photos of {source} "
             f"({next(iter(points.values()))['n_mpox']} mpox), none in a group with an exported case or with a kept "
             "photo of another source.", "",
             "| exported cases added | training photos | accuracy % | mpox sensitivity % | look-alikes flagged % | cannot tell % |",
             "|---|---|---|---|---|---|"]
    for step, p in sorted(points.items()):
        cells = [f"{100 * p[n]['value']:.1f} [{100 * p[n]['ci95'][0]:.1f}, {100 * p[n]['ci95'][1]:.1f}]" for n in names]
        lines.append(f"| {step} % ({p['cases_added']}) | {p['n_train']} | " + " | ".join(cells) + " |")
    first = min(points)
    lines += ["", f"Paired on the same test photos, each step against {first} % (exact McNemar test: photos where only "
              "the later step is right, only the earlier one; two-sided p):", "",
              "| step | top class right | mpox photos flagged | look-alikes not flagged |", "|---|---|---|---|"]
    for step, p in sorted(points.items()):
        if step == first:
            continue
        t = p[f"paired_with_step_{first}"]
        pv = lambda x: f"p {x:.3f}" if x >= 0.001 else "p < 0.001"  # noqa: E731
        lines.append(f"| {step} % | " + " | ".join(f"{t[n]['only_first']} vs {t[n]['only_second']}, {pv(t[n]['p_value'])}"
                                                  for n in ("accuracy", "mpox_flagged", "look_alikes_not_flagged")) + " |")
    (RESULTS / "curve.md").write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(6, 4))
    steps = sorted(points)
    for n in names:
        v = [100 * points[s][n]["value"] for s in steps]
        lo = [100 * points[s][n]["ci95"][0] for s in steps]
        hi = [100 * points[s][n]["ci95"][1] for s in steps]
        ax.errorbar(steps, v, yerr=[np.subtract(v, lo), np.subtract(hi, v)], marker="o", capsize=3, label=n.replace("_", " "))
    ax.set_xlabel(f"share of the exported {source} cases added to training (%)")
    ax.set_ylabel("% of the fixed test photos")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(RESULTS / "curve.png", dpi=120)


if __name__ == "__main__":
    main()
