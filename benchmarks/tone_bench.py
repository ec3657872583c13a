"""Measure skin-tone fairness (issue 13) of finished `mpoxscan cv` runs: baseline against each mitigation.

    PYTHONPATH=src .venv/bin/python benchmarks/tone_bench.py --manifest runs/msld2-10fold \
        --run baseline=runs/ft-base --run tone_balance=runs/ft-balance ...

Reads each run's out-of-fold predictions, joins them (by checksum) to the manifest's ITA column, and writes
benchmarks/results/tone/: tone.md, tone.json, tone.png and oof_<run>.csv (per image: checksum, path, fold, true
class, probabilities, the fold's threshold, ITA, tone bin), so that every figure can be re-scored.

Two operating points: each fold's own threshold (chosen on its inner validation for 95 % sensitivity: what a
shipped model does), and one threshold on the pooled out-of-fold P(mpox) that gives exactly >= 95 % sensitivity
(the issue's targets are stated there: specificity gap lightest - darkest bin <= 10 points, and |pooled
within-class Spearman of ITA with P(mpox)| among non-mpox photos <= 0.05). 95 % intervals: patient-grouped
bootstrap (1000 resamples of patients).

`--residualise RUN` adds an analysis row "RUN+residualised": a post-hoc correction that would need the photo's ITA
at inference time (not in the shipped model). Per test fold, the within-class slope of logit P(mpox) on ITA among
non-mpox photos is fitted, removed from the test fold's logits, and the fold's threshold is the adjusted score's
95 %-sensitivity point, both on the fold's own inner-validation predictions (`predictions/valid/`, the photos its
temperature and threshold came from; the row is marked "inner") -- the way a shipped model would fit them. Runs made
before `cv` saved those are cross-fitted instead, on the OTHER folds' out-of-fold predictions ("cross-fitted"): those
come from models that trained on this fold's photos, so the slope is not strictly blind to it (a small leak).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from mpoxscan.data.skin import BIN_NAMES, ita_bin
from mpoxscan.evaluation.metrics import POSITIVE, classification_metrics, screening_threshold, tone_metrics
from mpoxscan.evaluation.report import plot_tone
from mpoxscan.training.cv import kept_rows, make_splits, out_of_fold, read_fold_keys

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "tone"
TARGET_GAP, TARGET_RHO = 0.10, 0.05


def _bootstrap(oof, groups: np.ndarray, classes: list[str], threshold, n: int = 1000, seed: int = 0) -> dict:
    """95 % intervals of the specificity gap and the pooled within-class rho, resampling whole patients."""
    rng = np.random.default_rng(seed)
    names = np.unique(groups)
    members = {g: np.flatnonzero(groups == g) for g in names}
    thr = np.broadcast_to(np.asarray(threshold, float), (len(groups),))
    labels = np.asarray(oof.labels, object)
    tone = np.array([np.nan if v is None else float(v) for v in oof.ita])
    gaps, rhos = [], []
    for _ in range(n):
        idx = np.concatenate([members[g] for g in rng.choice(names, len(names))])
        t = tone_metrics(labels[idx], oof.proba[idx], classes, tone[idx], thr[idx], per_class=False)
        gaps.append(t["specificity_gap"]["gap"])
        rhos.append(t["ita_vs_p_positive"]["pooled_within_class"]["rho"])
    return {k: [float(np.nanpercentile(v, 2.5)), float(np.nanpercentile(v, 97.5))] for k, v in (("gap", gaps), ("rho", rhos))}


def _log_odds(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def _tone_slope(labels: np.ndarray, tone: np.ndarray, log_odds: np.ndarray) -> float:
    """The pooled within-class least-squares slope of the mpox log-odds on ITA, non-mpox photos with a tone only."""
    fit = (labels != POSITIVE) & ~np.isnan(tone)
    x, z = tone[fit].copy(), log_odds[fit].copy()
    for c in np.unique(labels[fit]):  # within class: the tone mix differs between classes
        m = labels[fit] == c
        x[m] -= x[m].mean()
        z[m] -= z[m].mean()
    return float(x @ z / (x @ x))


def _shifted(p: np.ndarray, tone: np.ndarray, slope: float, centre: float) -> np.ndarray:
    shift = np.where(~np.isnan(tone), slope * (np.nan_to_num(tone) - centre), 0.0)
    return 1 / (1 + np.exp(shift - _log_odds(p)))


def inner_valid(run: Path, strategy: str, model: str, classes: list[str], splits, rows) -> dict | None:
    """{fold: (labels, P(mpox), ITA)} of each fold's inner-validation photos (``predictions/valid/``, written by
    `mpoxscan cv` since 2026-11-26), or None when a fold lacks them."""
    from mpoxscan.data.manifest import row_ita

    tone = {r.sha256: row_ita(r) for r in rows}
    k, out = classes.index(POSITIVE), {}
    for split in splits:
        stem = f"{model}__{strategy}__{split.name}"
        got = read_fold_keys(run / "predictions" / "valid", stem, classes)
        if got is None:
            return None
        out[split.name] = (np.asarray(got[0], object), got[1][:, k],
                           np.array([np.nan if tone.get(h) is None else tone[h] for h, _ in got[3]]))
    return out


def residualise(oof, classes: list[str], valid: dict | None = None):
    """``oof`` with P(mpox) corrected for its within-class linear trend in ITA (see the module docstring); photos
    without an ITA are left as they are. Each fold's slope, centre and threshold are fitted on that fold's own
    inner-validation predictions when ``valid`` has them (as a shipped model would fit them, like its temperature),
    else on the other folds' test predictions (cross-fitted: those come from models that saw this fold)."""
    from dataclasses import replace

    k = classes.index(POSITIVE)
    y = np.asarray(oof.labels, object)
    folds = np.asarray(oof.fold, object)
    tone = np.array([np.nan if v is None else v for v in oof.ita])
    p = oof.proba[:, k]
    adjusted, threshold = p.copy(), np.zeros(len(y))
    for fold in np.unique(folds):
        test = folds == fold
        if valid is not None:
            fy, fp, ft = valid[fold]
        else:
            fy, fp, ft = y[~test], p[~test], tone[~test]
        slope, centre = _tone_slope(fy, ft, _log_odds(fp)), float(np.nanmean(ft))
        adjusted[test] = _shifted(p[test], tone[test], slope, centre)
        threshold[test] = screening_threshold(fy == POSITIVE, _shifted(fp, ft, slope, centre), 0.95)
    q = adjusted
    proba = oof.proba.copy()
    rest = np.delete(np.arange(proba.shape[1]), k)
    proba[:, rest] *= ((1 - q) / np.clip(1 - oof.proba[:, k], 1e-9, None))[:, None]
    proba[:, k] = q
    return replace(oof, proba=proba, threshold=threshold)


def finished_folds(run: Path, model: str) -> set[str]:
    cfg = json.loads((run / "config.json").read_text())
    # folds are named fold1.. (k-fold), split1.. (official) or by site (leave one site out)
    return {p.stem.rsplit("__", 1)[1] for p in (run / "predictions").glob(f"{model}__{cfg['strategy']}__*.csv")}


def measure(name: str, run: Path, manifest: Path, model: str, bootstrap: int, folds: set[str],
            residualised: bool = False) -> tuple[dict, list[dict]]:
    """The figures of one run on ``folds`` (the folds every compared run has finished)."""
    cfg = json.loads((run / "config.json").read_text())
    rows = kept_rows(manifest)
    classes = sorted({r.label for r in rows})
    protocol = cfg.get("protocol", "kfold")
    splits = [s for s in make_splits(rows, protocol, cfg["seed"]) if s.name in folds]
    oof = out_of_fold(run, cfg["strategy"], model, classes, splits, rows)
    if oof is None:
        raise SystemExit(f"{run}: no finished folds of {model}")
    if residualised:
        valid = inner_valid(run, cfg["strategy"], model, classes, splits, rows)
        oof = residualise(oof, classes, valid)
        residualised = "inner" if valid is not None else "cross-fitted"
    by_sha = {r.sha256: r for r in rows}
    missing = [s for s in oof.sha256 if s not in by_sha]
    if missing:
        raise SystemExit(f"{run}: {len(missing)} predicted images are not in {manifest} (another curation?)")
    k_pos = classes.index(POSITIVE)
    is_pos = np.array([y == POSITIVE for y in oof.labels])
    if not is_pos.any():  # e.g. leave-one-site-out runs that have finished only the sites without mpox
        raise SystemExit(f"{run}: the folds scored ({', '.join(sorted(folds))}) hold no {POSITIVE} photo, so there "
                         "is no sensitivity to fix a threshold by: finish a fold that has some")
    pooled_t = screening_threshold(is_pos, oof.proba[:, k_pos], 0.95)
    groups = np.array([by_sha[s].group for s in oof.sha256])
    points = {}
    for point, thr in (("fold_thresholds", oof.threshold), ("pooled_95_sensitivity", pooled_t)):
        t = tone_metrics(oof.labels, oof.proba, classes, oof.ita, thr)
        overall = classification_metrics(oof.labels, oof.proba, classes, threshold=float(np.median(np.atleast_1d(thr))))
        flagged = oof.proba[:, k_pos] >= thr
        t["overall"] = {"accuracy": overall["accuracy"], "macro_f1": overall["macro_f1"],
                        "auc": overall["screening"]["auc"], "sensitivity": float(flagged[is_pos].mean()),
                        "specificity": float((~flagged[~is_pos]).mean())}
        if bootstrap:
            t["bootstrap95"] = _bootstrap(oof, groups, classes, thr, n=bootstrap)
        t["targets_met"] = {"gap": abs(t["specificity_gap"]["gap"]) <= TARGET_GAP,
                            "rho": abs(t["ita_vs_p_positive"]["pooled_within_class"]["rho"]) <= TARGET_RHO}
        points[point] = t
    per_fold = []
    fold_of = np.asarray(oof.fold, object)
    for split in splits:  # the mean over folds, each at its own threshold, as `mpoxscan cv` summarises
        m = fold_of == split.name
        m = classification_metrics([y for y, k in zip(oof.labels, m) if k], oof.proba[m], classes,
                                   threshold=float(oof.threshold[m][0]))
        per_fold.append({"accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
                         "screening_sensitivity": m["screening"]["sensitivity"],
                         "screening_specificity": m["screening"]["specificity"]})
    fold_mean = {k: float(np.mean([f[k] for f in per_fold])) for k in per_fold[0]}
    out = {"run": str(run), "strategy": cfg.get("strategy", ""), "protocol": protocol,
           "finetune": (cfg.get("extra") or {}).get("finetune", {}),
           "residualised": residualised,
           "n": len(oof.labels),
           "folds": sorted(set(oof.fold), key=lambda f: (len(f), f)), "pooled_threshold": pooled_t, "fold_mean": fold_mean, **points}
    per_image = [{"sha256": s, "relpath": by_sha[s].relpath, "fold": f, "label": y,
                  **{f"p_{c}": f"{p:.6f}" for c, p in zip(classes, pr)}, "fold_threshold": f"{th:.6f}",
                  "ita": "" if v is None else f"{v:.2f}", "tone": ita_bin(v) or ""}
                 for s, f, y, pr, th, v in zip(oof.sha256, oof.fold, oof.labels, oof.proba, oof.threshold, oof.ita)]
    return out, per_image


PROTOCOL_WORDS = {"kfold": "patient-grouped folds", "official": "MSLD v2.0's official splits",
                  "loso": "leave one site out"}


def _pct(x: float) -> str:
    return "-" if x != x else f"{100 * x:.1f}"


def markdown(measured: dict, manifest: Path) -> str:
    first_run = next(iter(measured.values()))
    strategies = ", ".join(dict.fromkeys(m.get("strategy") or "?" for m in measured.values()))
    protocols = ", ".join(dict.fromkeys(PROTOCOL_WORDS.get(m.get("protocol"), m.get("protocol") or "?")
                                        for m in measured.values()))
    lines = [f"# Skin tone: baseline and mitigations (EfficientNet-Lite0, {strategies}, {protocols})",
             "", f"Folds scored (those every run finished): {', '.join(first_run['folds'])}; {first_run['n']} "
             "test photos.", "", f"Written by `benchmarks/tone_bench.py` from the runs' out-of-fold predictions (`oof_<run>.csv` beside "
             f"this file) and the ITA column of `{manifest.name}` (curate; skin mask: Chai & Ngan YCbCr; ITA from the "
             "median L*, b* of the skin leaving out its reddest quarter). Bins: Del Bino / Chardon. Targets (issue 13): "
             "specificity gap lightest - darkest <= 10 points at >= 95 % sensitivity, |pooled within-class Spearman of "
             "ITA with P(mpox) among non-mpox photos| <= 0.05.", ""]
    for point, title in (("pooled_95_sensitivity", "One threshold on the pooled out-of-fold P(mpox), >= 95 % sensitivity"),
                         ("fold_thresholds", "Each fold's own threshold (inner validation, 95 % sensitivity): as shipped")):
        lines += [f"## {title}", "",
                  "| run | accuracy % | sensitivity % | specificity % | " + " | ".join(f"spec. {b} %" for b in BIN_NAMES)
                  + " | gap (points) [95 % CI] | pooled rho [95 % CI] | targets met |",
                  "|" + "---|" * (7 + len(BIN_NAMES))]
        for name, m in measured.items():
            t = m[point]
            ci = t.get("bootstrap95", {})
            gap, rho = t["specificity_gap"]["gap"], t["ita_vs_p_positive"]["pooled_within_class"]["rho"]
            lines.append(f"| {name} | {_pct(t['overall']['accuracy'])} | {_pct(t['overall']['sensitivity'])} | "
                         f"{_pct(t['overall']['specificity'])} | "
                         + " | ".join(_pct(t["bins"][b]["specificity"]) for b in BIN_NAMES)
                         + f" | {100 * gap:+.1f}" + (f" [{100 * ci['gap'][0]:+.1f}, {100 * ci['gap'][1]:+.1f}]" if ci else "")
                         + f" | {rho:+.3f}" + (f" [{ci['rho'][0]:+.3f}, {ci['rho'][1]:+.3f}]" if ci else "")
                         + f" | gap {'yes' if t['targets_met']['gap'] else 'no'}, rho {'yes' if t['targets_met']['rho'] else 'no'} |")
        lines.append("")
    first = next(iter(measured.values()))["pooled_95_sensitivity"]
    lines += ["## Per bin (pooled 95 %-sensitivity threshold)", "",
              "| run | " + " | ".join(f"{b} (n={first['bins'][b]['n']}, mpox {first['bins'][b]['n_positive']})" for b in BIN_NAMES) + " |",
              "|" + "---|" * (1 + len(BIN_NAMES))]
    for key in ("accuracy", "sensitivity", "specificity"):
        for name, m in measured.items():
            lines.append(f"| {name}: {key} % | " + " | ".join(_pct(m["pooled_95_sensitivity"]["bins"][b][key]) for b in BIN_NAMES) + " |")
    lines += ["", "## Spearman of ITA with P(mpox) within each non-mpox class", "",
              "| run | " + " | ".join(next(iter(measured.values()))["pooled_95_sensitivity"]["ita_vs_p_positive"]["per_class"]) + " | pooled |",
              "|" + "---|" * (2 + len(first["ita_vs_p_positive"]["per_class"]))]
    for name, m in measured.items():
        c = m["pooled_95_sensitivity"]["ita_vs_p_positive"]
        lines.append(f"| {name} | " + " | ".join(f"{v['rho']:+.2f} (n={v['n']})" for v in c["per_class"].values())
                     + f" | {c['pooled_within_class']['rho']:+.3f} |")
    lines += ["", "Mean over the scored folds (each fold's threshold):", "",
              "| run | finetune options | accuracy % | macro-F1 % | sensitivity % | specificity % |", "|---|---|---|---|---|---|"]
    for name, m in measured.items():
        f = m["fold_mean"]
        options = f"{m['finetune'] or '-'}" + (f" + residualised, {m['residualised']} (analysis)"
                                                if m.get("residualised") else "")
        lines.append(f"| {name} | {options} | " + " | ".join(_pct(f.get(k, float('nan'))) for k in
                     ("accuracy", "macro_f1", "screening_sensitivity", "screening_specificity")) + " |")
    if any(m.get("residualised") for m in measured.values()):
        lines += ["", "Rows `+residualised` are an analysis, not a shipped model: P(mpox) with its within-class linear "
                  "trend in ITA removed. \"inner\": the slope and each fold's threshold fitted on the fold's own "
                  "inner-validation predictions (as a shipped model would fit them); \"cross-fitted\": on the other "
                  "folds' out-of-fold predictions (those models trained on this fold's photos: a small leak through "
                  "one number). "
                  "Shipping it would need each photo's ITA at inference time, i.e. the skin-tone measurement inside "
                  "the model file and the page; one slope for all classes over-corrects some (Healthy) while "
                  "under-correcting others (see the within-class table)."]
    lines += ["", "![per-bin sensitivity and specificity](tone.png)", ""]
    return "\n".join(lines)


def plot(measured: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(14, 5), sharey=True)
    for ax, (point, title) in zip(axes, (("pooled_95_sensitivity", "one pooled threshold, >= 95 % sensitivity"),
                                         ("fold_thresholds", "each fold's threshold (as shipped)"))):
        for k, (name, m) in enumerate(measured.items()):
            plot_tone(ax, m[point], name, color=f"C{k}")
        ax.set_title(f"mpox screening per skin tone: {title}", fontsize=10)
    axes[0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", type=Path, default=Path("runs/msld2-10fold/manifest.csv"), help="manifest with the ita column")
    ap.add_argument("--run", action="append", required=True, metavar="NAME=FOLDER", help="a finished cv run (first: baseline)")
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--bootstrap", type=int, default=1000, help="patient-grouped bootstrap resamples (0: none)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--residualise", action="append", default=[], metavar="NAME",
                    help="also score run NAME with the cross-fitted ITA residualisation (an analysis, not shipped)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    runs = dict(spec.split("=", 1) for spec in args.run)
    folds = set.intersection(*(finished_folds(Path(f), args.model) for f in runs.values()))
    if not folds:
        raise SystemExit("the runs have no finished fold in common")
    unknown = set(args.residualise) - set(runs)
    if unknown:
        raise SystemExit(f"--residualise names no --run: {', '.join(sorted(unknown))}")
    measured = {}
    jobs = [(name, folder, False) for name, folder in runs.items()]
    jobs += [(f"{name}+residualised", runs[name], True) for name in args.residualise]
    for name, folder, residualised in jobs:
        measured[name], per_image = measure(name, Path(folder), args.manifest, args.model, args.bootstrap, folds,
                                            residualised)
        with open(args.out / f"oof_{name}.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(per_image[0]))
            w.writeheader()
            w.writerows(per_image)
    (args.out / "tone.json").write_text(json.dumps(measured, indent=2))
    (args.out / "tone.md").write_text(markdown(measured, args.manifest))
    plot(measured, args.out / "tone.png")
    print((args.out / "tone.md").read_text())


if __name__ == "__main__":
    main()
