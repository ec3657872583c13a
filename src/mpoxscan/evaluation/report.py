"""`mpoxscan report RUN`: the comparison of a cross-validation run as Markdown and HTML, with plots."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

from mpoxscan.errors import MpoxscanError
from mpoxscan.evaluation.metrics import POSITIVE
from mpoxscan.training.cv import read_fold


def _pm(summary: dict, key: str, scale: float = 100.0, digits: int = 2) -> str:
    s = summary.get(key)
    if not s or s["n"] == 0 or np.isnan(s["mean"]):
        return "-"
    return f"{scale * s['mean']:.{digits}f} ± {scale * s['sd']:.{digits}f}"


def _predictions(run: Path, results: dict, model: str) -> tuple[list[str], np.ndarray]:
    labels, probas = [], []
    for split in results["splits"]:
        got = read_fold(run / "predictions", f"{model}__{results['config']['strategy']}__{split['name']}", results["classes"])
        if got:
            labels += got[0]
            probas.append(got[1])
    return labels, (np.concatenate(probas) if probas else np.zeros((0, len(results["classes"]))))


def plot_tone(ax, tone: dict, label: str, color: str | None = None) -> None:
    """Sensitivity (dashed, circles) and specificity (solid, squares) per skin-tone bin, lightest first, in one
    colour per model or run, from ``tone_metrics``."""
    names = list(tone["bins"])
    x = np.arange(len(names))
    for key, style in (("sensitivity", "--o"), ("specificity", "-s")):
        (line,) = ax.plot(x, [100 * tone["bins"][b][key] for b in names], style, color=color, label=f"{label}: {key}")
        color = line.get_color()  # the specificity line takes the sensitivity line's colour
    ax.set_xticks(x, [f"{b}\n(n={tone['bins'][b]['n']})" for b in names], fontsize=8)
    ax.set(xlabel="skin tone (ITA bin, Del Bino)", ylabel="%", ylim=(0, 102))
    ax.grid(alpha=0.3)


def _tone_plot(run: Path, results: dict) -> str | None:
    import matplotlib.pyplot as plt

    toned = {m: r["tone"] for m, r in results["models"].items() if "tone" in r}
    if not toned:
        return None
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for m, tone in toned.items():
        plot_tone(ax, tone, m)
    ax.set_title(f"{POSITIVE} screening per skin tone (pooled folds, each fold's threshold)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(run / "plots" / "tone.png", dpi=110)
    plt.close(fig)
    return "plots/tone.png"


def tone_sections(models: dict) -> list[tuple]:
    """Report sections of the per-skin-tone figures (``results["models"][m]["tone"]``), if any."""
    toned = {m: r["tone"] for m, r in models.items() if "tone" in r}
    if not toned:
        return []
    out: list[tuple] = [("h2", "Skin tone (ITA bins, Del Bino; pooled out-of-fold, each fold's screening threshold)")]
    body = []
    for m, t in toned.items():
        for b, v in t["bins"].items():
            body.append([m, b, v["n"], f"{100 * v['n_positive'] / v['n']:.0f}" if v["n"] else "-",
                         *(f"{100 * v[k]:.1f}" if not np.isnan(v[k]) else "-" for k in ("accuracy", "sensitivity", "specificity"))])
    out.append(("table", ["model", "skin tone", "n", f"{POSITIVE} %", "accuracy %", "sensitivity %", "specificity %"], body))
    corr = []
    for m, t in toned.items():
        c = t["ita_vs_p_positive"]
        gap = t["specificity_gap"]
        corr.append([m, f"{100 * gap['gap']:+.1f} ({gap['lightest']} − {gap['darkest']})",
                     f"{c['pooled_within_class']['rho']:+.3f} (n={c['pooled_within_class']['n']})",
                     ", ".join(f"{k} {v['rho']:+.2f}" for k, v in c["per_class"].items())])
    out += [("p", f"Spearman's rho of ITA with P({POSITIVE}) among photos of the other classes: per class, and pooled "
                  "within classes (Pearson of within-class centred ranks). Negative: darker skin, higher P("
                  f"{POSITIVE}) within a class."),
            ("table", ["model", "specificity gap, points", "pooled within-class rho", "per class rho"], corr)]
    return out


def _plots(run: Path, results: dict) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import roc_curve

    folder = run / "plots"
    folder.mkdir(exist_ok=True)
    models = list(results["models"])
    classes = results["classes"]
    files = {}

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, title in zip(axes, ("accuracy", "macro_f1"), ("Accuracy per fold", "Macro-F1 per fold")):
        data = [[100 * f["metrics"][key] for f in results["models"][m]["folds"]] for m in models]
        ax.boxplot(data, showmeans=True)
        ax.set_xticks(range(1, len(models) + 1), models, rotation=20, ha="right")
        ax.set_title(title)
        ax.set_ylabel("%")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(folder / "folds_boxplot.png", dpi=110)
    plt.close(fig)
    files["boxplot"] = "plots/folds_boxplot.png"

    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 4), squeeze=False)
    for ax, m in zip(axes[0], models):
        cm = np.array(results["models"][m]["confusion_matrix"])
        ax.imshow(cm, cmap="Blues")
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black", fontsize=8)
        ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(classes)), classes, fontsize=8)
        ax.set_title(m, fontsize=9)
        ax.set_xlabel("predicted")
    axes[0][0].set_ylabel("true (all test folds)")
    fig.tight_layout()
    fig.savefig(folder / "confusion.png", dpi=110)
    plt.close(fig)
    files["confusion"] = "plots/confusion.png"

    if POSITIVE in classes:
        k = classes.index(POSITIVE)
        fig, (roc_ax, rel_ax) = plt.subplots(1, 2, figsize=(11, 4.5))
        for m in models:
            labels, proba = _predictions(run, results, m)
            if len(labels) == 0:
                continue
            is_pos = np.array([y == POSITIVE for y in labels])
            fpr, tpr, _ = roc_curve(is_pos, proba[:, k])
            roc_ax.plot(fpr, tpr, label=f"{m} (AUC {results['models'][m]['summary']['screening_auc']['mean']:.3f})")
            y_idx = np.array([classes.index(y) for y in labels])
            frac, conf = calibration_curve(proba.argmax(1) == y_idx, proba.max(1), n_bins=10, strategy="uniform")
            rel_ax.plot(conf, frac, marker="o", label=m)
        roc_ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        roc_ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=f"Screening ROC: {POSITIVE} vs rest (pooled folds)")
        rel_ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        rel_ax.set(xlabel="confidence (top class)", ylabel="accuracy", title="Reliability (after temperature scaling)")
        for ax in (roc_ax, rel_ax):
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(folder / "roc_reliability.png", dpi=110)
        plt.close(fig)
        files["roc"] = "plots/roc_reliability.png"
    tone = _tone_plot(run, results)
    if tone:
        files["tone"] = tone
    return files


def _sections(results: dict, plots: dict[str, str]) -> list[tuple]:
    cfg = results["config"]
    models = results["models"]
    out: list[tuple] = [("h1", f"Cross-validation: {cfg['strategy']} on {Path(cfg['manifest']).parent.name}")]
    protocol = ("the dataset's imported splits (train / valid / test per fold)" if cfg["protocol"] == "official"
                else "stratified, patient-grouped k-fold (the manifest's folds)")
    out.append(("p", f"{results['n_images']} images, {len(results['classes'])} classes ({', '.join(results['classes'])}); "
                     f"{len(results['splits'])} folds: {protocol}. Hyperparameters, temperature and screening threshold "
                     f"come from each fold's inner validation split, never from its test images. "
                     f"{cfg['views']} augmented training views per image{'; test-time augmentation' if cfg['tta'] else ''}; "
                     f"seed {cfg['seed']}."))
    leaks = sum(s["group_leaks"] for s in results["splits"])
    if leaks:
        out.append(("p", f"Warning: {leaks} leakage groups straddle train and test in these folds."))
    header = ["model", "params (M)", "accuracy %", "precision %", "recall %", "F1 %", "balanced acc. %", "kappa",
              f"{POSITIVE} AUC", "sensitivity %", "specificity %", "ECE % before → after"]
    body = []
    for m, r in sorted(models.items(), key=lambda kv: -kv[1]["summary"]["accuracy"]["mean"]):
        s = r["summary"]
        body.append([m, f"{r['parameters'] / 1e6:.2f}", _pm(s, "accuracy"), _pm(s, "macro_precision"), _pm(s, "macro_recall"),
                     _pm(s, "macro_f1"), _pm(s, "balanced_accuracy"), _pm(s, "cohen_kappa", 1, 3),
                     _pm(s, "screening_auc", 1, 3), _pm(s, "screening_sensitivity"), _pm(s, "screening_specificity"),
                     f"{_pm(s, 'uncalibrated_ece', 100, 1)} → {_pm(s, 'ece', 100, 1)}"])
    out += [("h2", "Comparison (mean ± sd over folds; precision, recall, F1 are macro averages)"), ("table", header, body)]
    ci_rows = [[m, *(f"[{100 * r['summary'][k]['ci95'][0]:.2f}, {100 * r['summary'][k]['ci95'][1]:.2f}]"
                     for k in ("accuracy", "macro_f1"))] for m, r in models.items()]
    out += [("h2", "95 % confidence intervals of the mean"), ("table", ["model", "accuracy %", "macro-F1 %"], ci_rows)]
    comp = results.get("comparison") or {}
    if comp:
        rows = [[comp["best"], m, f"{100 * v['mean_difference']:+.2f}", f"{v['t']:.2f}", f"{v['p']:.4f}",
                 "yes" if v["p"] < 0.05 else "no"] for m, v in comp["versus"].items()]
        fr = comp["friedman"]
        verdict = (f"Friedman test over all models: p = {fr['p']:.4f}." if not np.isnan(fr["p"]) else
                   "Friedman test needs three or more models.")
        out += [("h2", "Statistical verdict"),
                ("p", f"Best by mean accuracy: {comp['best']}. Corrected resampled t-test (Nadeau & Bengio; test fraction "
                      f"{comp['test_fraction']:.2f}) of the best against each other model. {verdict}"),
                ("table", ["best", "versus", "Δ accuracy (points)", "t", "p", "significant at 0.05"], rows)]
    export_rows = [[m, p, _pm(e, "accuracy"), _pm(e, "macro_f1"), _pm(e, "agreement_with_fp32"),
                    f"{np.mean([f['bytes'] for f in e['folds']]) / 1e6:.2f}", f"{_pm(r['summary'], 'accuracy')}"]
                   for m, r in models.items() for p, e in r.get("exports", {}).items()]
    if export_rows:
        out += [("h2", "Accuracy of the exported files (ONNX Runtime, plain view, each fold's own export)"),
                ("p", "Each fold's trained network is exported to ONNX; int8 is calibrated on that fold's training images "
                      "only. The last column repeats the PyTorch figure of the same folds (with test-time augmentation "
                      "when the run used it)."),
                ("table", ["model", "precision", "accuracy %", "macro-F1 %", "top-1 agreement with fp32 %", "size (MB)",
                           "PyTorch accuracy %"], export_rows)]
    out += tone_sections(models)
    if "tone" in plots:
        out.append(("img", plots["tone"], "Sensitivity and specificity per skin tone"))
    for key, title in (("boxplot", "Per-fold scores"), ("confusion", "Confusion matrices (all test folds)"),
                       ("roc", "Screening ROC and reliability")):
        if key in plots:
            out += [("h2", title), ("img", plots[key], title)]
    per_fold = [[m, f["fold"], f"{100 * f['metrics']['accuracy']:.2f}", f"{100 * f['metrics']['macro_f1']:.2f}",
                 f"{f['metrics'].get('screening', {}).get('auc', float('nan')):.3f}", f"{f['info']['threshold']:.3f}",
                 f"{f['info']['temperature']:.2f}", f"{f['info']['seconds']:.0f}"]
                for m, r in models.items() for f in r["folds"]]
    out += [("h2", "Per fold"), ("table", ["model", "fold", "accuracy %", "macro-F1 %", f"{POSITIVE} AUC",
                                           "threshold", "temperature", "seconds"], per_fold)]
    return out


def _markdown(sections: list[tuple]) -> str:
    lines = []
    for kind, *args in sections:
        if kind in ("h1", "h2"):
            lines += [("# " if kind == "h1" else "## ") + args[0], ""]
        elif kind == "p":
            lines += [args[0], ""]
        elif kind == "table":
            header, body = args
            lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in body] + [""]
        elif kind == "img":
            lines += [f"![{args[1]}]({args[0]})", ""]
    return "\n".join(lines)


def _html(sections: list[tuple]) -> str:
    parts = ["<!doctype html><meta charset='utf-8'><title>mpoxscan report</title>",
             "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}img{max-width:100%}</style>"]
    for kind, *args in sections:
        if kind in ("h1", "h2"):
            parts.append(f"<{kind}>{html.escape(args[0])}</{kind}>")
        elif kind == "p":
            parts.append(f"<p>{html.escape(args[0])}</p>")
        elif kind == "table":
            header, body = args
            parts.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"
                         + "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in body)
                         + "</table>")
        elif kind == "img":
            parts.append(f"<p><img src='{html.escape(args[0])}' alt='{html.escape(args[1])}'></p>")
    return "\n".join(parts) + "\n"


def write_report(run: Path) -> tuple[Path, Path]:
    run = Path(run)
    path = run / "results.json"
    if not path.exists():
        raise MpoxscanError(f"{run}: no results.json (run `mpoxscan cv ... --out {run}` first)")
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise MpoxscanError(f"{path}: not valid JSON") from None
    if not results.get("models"):
        raise MpoxscanError(f"{path}: no finished folds to report")
    sections = _sections(results, _plots(run, results))
    (run / "report.md").write_text(_markdown(sections))
    (run / "report.html").write_text(_html(sections))
    return run / "report.md", run / "report.html"
