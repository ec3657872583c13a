"""All classification metrics of mpoxscan, in one place (scikit-learn and SciPy wherever they have them)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

POSITIVE = "Monkeypox"


def expected_calibration_error(y_true_idx: np.ndarray, proba: np.ndarray, bins: int = 15) -> float:
    """ECE of the top-1 confidence: mean |accuracy - confidence| over equal-width confidence bins, weighted by size.
    Hand-written: scikit-learn has a reliability curve but no ECE."""
    conf = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == y_true_idx).astype(float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - conf[mask].mean())
    return float(ece)


def screening_threshold(is_positive: np.ndarray, score: np.ndarray, sensitivity: float = 0.95) -> float:
    """The highest threshold on P(mpox) whose sensitivity is at least ``sensitivity`` (from the ROC curve)."""
    from sklearn.metrics import roc_curve

    if is_positive.sum() == 0:
        return 0.5
    fpr, tpr, thresholds = roc_curve(is_positive, score)
    ok = np.flatnonzero(tpr >= sensitivity)
    return float(min(1.0, thresholds[ok[0]]))


def classification_metrics(y_true: Sequence[str], proba: np.ndarray, classes: Sequence[str],
                           positive: str = POSITIVE, threshold: float | None = None) -> dict:
    """Metrics of one set of predictions. ``proba``: (n, len(classes)) rows summing to 1; ``threshold``: the
    screening threshold on P(positive) chosen beforehand (for example on inner validation)."""
    from sklearn import metrics as skm

    classes = list(classes)
    y_idx = np.array([classes.index(y) for y in y_true])
    pred = proba.argmax(axis=1)
    labels = list(range(len(classes)))
    prec, rec, f1, support = skm.precision_recall_fscore_support(y_idx, pred, labels=labels, zero_division=0)
    out: dict = {
        "n": int(len(y_idx)),
        "accuracy": float(skm.accuracy_score(y_idx, pred)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y_idx, pred)),
        "macro_precision": float(prec.mean()),
        "macro_recall": float(rec.mean()),
        "macro_f1": float(f1.mean()),
        "cohen_kappa": float(skm.cohen_kappa_score(y_idx, pred, labels=labels)),
        "per_class": {c: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                      for c, p, r, f, s in zip(classes, prec, rec, f1, support)},
        "confusion_matrix": skm.confusion_matrix(y_idx, pred, labels=labels).tolist(),
        "ece": expected_calibration_error(y_idx, proba),
    }
    present = sorted(set(y_idx.tolist()))
    if len(present) > 1:
        # Renormalised over the classes present. A model may give them almost nothing (a linear probe's class that
        # had no training photo: leave one site out), so no floor on the sum: a floor left rows that do not sum to 1.
        mass = proba[:, present].sum(axis=1, keepdims=True)
        sub = np.divide(proba[:, present], mass, out=np.full((len(proba), len(present)), 1 / len(present)),
                        where=mass > 0)
        remap = {c: k for k, c in enumerate(present)}
        y_sub = np.array([remap[v] for v in y_idx])
        out["macro_auc_ovr"] = float(skm.roc_auc_score(y_sub, sub if len(present) > 2 else sub[:, 1], multi_class="ovr"))
    if positive in classes:
        k = classes.index(positive)
        is_pos = y_idx == k
        score = proba[:, k]
        screen: dict = {"positive": positive, "prevalence": float(is_pos.mean())}
        if 0 < is_pos.sum() < len(is_pos):
            screen["auc"] = float(skm.roc_auc_score(is_pos, score))
        t = 0.5 if threshold is None else threshold
        flagged = score >= t
        screen["threshold"] = float(t)
        screen["sensitivity"] = float(flagged[is_pos].mean()) if is_pos.any() else float("nan")
        screen["specificity"] = float((~flagged[~is_pos]).mean()) if (~is_pos).any() else float("nan")
        out["screening"] = screen
    return out


def mean_sd_ci(values: Sequence[float], confidence: float = 0.95) -> dict:
    """Mean, sample standard deviation and the t-interval of the mean across folds."""
    from scipy import stats

    v = np.asarray([x for x in values if not (isinstance(x, float) and math.isnan(x))], float)
    if len(v) == 0:
        return {"mean": float("nan"), "sd": float("nan"), "ci95": [float("nan"), float("nan")], "n": 0}
    mean = float(v.mean())
    sd = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    half = float(stats.t.ppf(0.5 + confidence / 2, len(v) - 1) * sd / math.sqrt(len(v))) if len(v) > 1 else 0.0
    return {"mean": mean, "sd": sd, "ci95": [mean - half, mean + half], "n": int(len(v))}


def corrected_resampled_ttest(a: Sequence[float], b: Sequence[float], test_fraction: float) -> dict:
    """Nadeau & Bengio's corrected resampled t-test of per-fold scores a vs b (paired folds). Cross-validation folds
    share training data, so the plain paired t-test is too optimistic; the variance is inflated by n_test/n_train.
    Hand-written: SciPy has the t distribution but not this correction."""
    from scipy import stats

    d = np.asarray(a, float) - np.asarray(b, float)
    k = len(d)
    if k < 2:
        return {"t": float("nan"), "p": float("nan"), "mean_difference": float(d.mean()) if k else float("nan")}
    var = d.var(ddof=1)
    ratio = test_fraction / (1 - test_fraction)
    denom = math.sqrt((1 / k + ratio) * var) if var > 0 else 0.0
    if denom == 0:
        t, p = (float("inf") if d.mean() != 0 else 0.0), (0.0 if d.mean() != 0 else 1.0)
    else:
        t = float(d.mean() / denom)
        p = float(2 * stats.t.sf(abs(t), k - 1))
    return {"t": t, "p": p, "mean_difference": float(d.mean())}


def friedman(scores: dict[str, Sequence[float]]) -> dict:
    """Friedman test over models (columns) measured on the same folds (rows); needs three or more models."""
    from scipy import stats

    if len(scores) < 3:
        return {"statistic": float("nan"), "p": float("nan")}
    res = stats.friedmanchisquare(*[np.asarray(v, float) for v in scores.values()])
    return {"statistic": float(res.statistic), "p": float(res.pvalue)}


def mcnemar(a: Sequence[bool], b: Sequence[bool]) -> dict:
    """Exact McNemar test of two paired boolean outcomes on the same photos (e.g. correct under model A, under
    model B): only the photos where they differ count. ``p_value``: two-sided; ``p_first_worse``: one-sided, that
    ``a`` is true less often than ``b`` (SciPy's binomial test: the exact form of the test for small counts)."""
    from scipy.stats import binomtest

    a, b = np.asarray(a, bool), np.asarray(b, bool)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    n = only_a + only_b
    two = binomtest(only_a, n, 0.5).pvalue if n else 1.0
    worse = binomtest(only_a, n, 0.5, alternative="less").pvalue if n else 1.0
    return {"only_first": only_a, "only_second": only_b, "p_value": float(two), "p_first_worse": float(worse)}


def paired_screening(mpox: np.ndarray, right: tuple, flagged: tuple) -> dict:
    """Two models' answers on the same photos, paired: exact McNemar tests (:func:`mcnemar`, the first model first)
    of the top class right, mpox photos flagged and look-alikes not flagged. ``mpox``: which photos are mpox;
    ``right`` and ``flagged``: each a pair (first model's, second model's) of boolean arrays over the photos."""
    mpox = np.asarray(mpox, bool)
    (right_a, right_b), (flag_a, flag_b) = ((np.asarray(x, bool), np.asarray(y, bool)) for x, y in (right, flagged))
    return {"accuracy": mcnemar(right_a, right_b), "mpox_flagged": mcnemar(flag_a[mpox], flag_b[mpox]),
            "look_alikes_not_flagged": mcnemar(~flag_a[~mpox], ~flag_b[~mpox])}


def ppv_at_prevalence(sensitivity: float, specificity: float, prevalence: float) -> float:
    """Positive predictive value (Bayes' rule) of a test with this sensitivity and specificity at ``prevalence``:
    a test set's own mix of classes says nothing about the share of mpox among the people who will use the tool."""
    tp = sensitivity * prevalence
    fp = (1.0 - specificity) * (1.0 - prevalence)
    return float(tp / (tp + fp)) if tp + fp > 0 else float("nan")


def rank_auc(is_positive: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney U of the positives' average ranks (ties count half): the same number as
    scikit-learn's roc_auc_score (a test checks it), without its input validation, which took 90 % of a bootstrap's
    time (it calls this thousands of times)."""
    from scipy.stats import rankdata

    is_positive = np.asarray(is_positive, bool)
    n_pos = int(is_positive.sum())
    n_neg = len(is_positive) - n_pos
    ranks = rankdata(score)
    return float((ranks[is_positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def pooled_point_metrics(y_idx: np.ndarray, proba: np.ndarray, flagged: np.ndarray | None, positive_idx: int | None,
                         prevalences: Sequence[float] = (0.01, 0.10)) -> dict[str, float]:
    """The figures reported over pooled out-of-fold predictions: accuracy, macro-F1, balanced accuracy, mpox AUC,
    sensitivity / specificity of ``flagged`` (each image flagged at its own fold's threshold) and the PPV at each
    prevalence."""
    # Accuracy, balanced accuracy and macro-F1 from one confusion matrix in NumPy: the bootstrap calls this
    # thousands of times. Same conventions as scikit-learn (F1 of a class never predicted nor present: 0).
    n_classes = proba.shape[1]
    pred = proba.argmax(axis=1)
    cm = np.bincount(y_idx * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    tp, support, predicted = np.diag(cm).astype(float), cm.sum(1), cm.sum(0)
    recall = np.divide(tp, support, out=np.zeros(n_classes), where=support > 0)
    precision = np.divide(tp, predicted, out=np.zeros(n_classes), where=predicted > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(n_classes), where=precision + recall > 0)
    out = {"accuracy": float(tp.sum() / max(1, len(y_idx))),
           "balanced_accuracy": float(recall[support > 0].mean()) if (support > 0).any() else float("nan"),
           "macro_f1": float(f1.mean())}
    if positive_idx is not None:
        is_pos = y_idx == positive_idx
        out["screening_auc"] = (rank_auc(is_pos, proba[:, positive_idx])
                                if 0 < is_pos.sum() < len(is_pos) else float("nan"))
        if flagged is not None:
            sens = float(flagged[is_pos].mean()) if is_pos.any() else float("nan")
            spec = float((~flagged[~is_pos]).mean()) if (~is_pos).any() else float("nan")
            out["sensitivity"], out["specificity"] = sens, spec
            for prev in prevalences:
                out[f"ppv_at_{prev:g}"] = ppv_at_prevalence(sens, spec, prev)
    return out


def patient_bootstrap(groups: Sequence[str], statistic,
                      n_boot: int = 2000, seed: int = 0, confidence: float = 0.95) -> dict[str, dict]:
    """Percentile confidence intervals of ``statistic(index) -> {name: value}`` over the pooled predictions, drawing
    whole patient groups (``groups[i]``: image i's) with replacement: photos of one patient are not independent, so resampling photos would
    give intervals that are too narrow. Returns {name: {"value", "ci95": [lo, hi], "n_boot"}}."""
    groups = np.asarray(groups)
    names, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(names))]
    point = statistic(np.arange(len(groups)))
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {k: [] for k in point}
    for _ in range(n_boot):
        index = np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])
        for k, v in statistic(index).items():
            draws[k].append(v)
    alpha = (1 - confidence) / 2
    out = {}
    for k, v in point.items():
        d = np.asarray(draws[k], float)
        d = d[~np.isnan(d)]
        lo, hi = (np.quantile(d, [alpha, 1 - alpha]).tolist() if len(d) else [float("nan"), float("nan")])
        out[k] = {"value": v, "ci95": [float(lo), float(hi)], "n_boot": int(len(d))}
    return out


def pooled_summary(y_true: Sequence[str], proba: np.ndarray, classes: Sequence[str], groups: Sequence[str],
                   thresholds: np.ndarray | None = None, positive: str = POSITIVE, n_boot: int = 2000, seed: int = 0,
                   prevalences: Sequence[float] = (0.01, 0.10)) -> dict:
    """Honest statistics over all out-of-fold predictions pooled: each figure with a 95 % patient-level bootstrap
    CI, and the ECE of the pooled predictions. ``thresholds``: per image, the screening threshold chosen on its own
    fold's inner validation."""
    classes = list(classes)
    y_idx = np.array([classes.index(y) for y in y_true])
    k = classes.index(positive) if positive in classes else None
    flagged = proba[:, k] >= np.asarray(thresholds, float) if (k is not None and thresholds is not None) else None

    def statistic(index: np.ndarray) -> dict[str, float]:
        return pooled_point_metrics(y_idx[index], proba[index], None if flagged is None else flagged[index], k,
                                    prevalences)

    return {"n_images": int(len(y_idx)), "n_groups": int(len(set(groups))),
            "ece": expected_calibration_error(y_idx, proba), "metrics": patient_bootstrap(groups, statistic, n_boot, seed)}


def tone_metrics(y_true: Sequence[str], proba: np.ndarray, classes: Sequence[str], ita: Sequence[float | None],
                 threshold: float | np.ndarray = 0.5, positive: str = POSITIVE, per_class: bool = True) -> dict:
    """Fairness across skin tones (issue 13). ``ita``: each photo's Individual Typology Angle (None: unknown);
    ``threshold``: the screening threshold on P(positive), one number or one per photo (each fold's own).

    ``bins``: per Del Bino bin, n, accuracy, sensitivity and specificity (mpox vs rest) at the threshold;
    ``specificity_gap``: specificity of the lightest minus that of the darkest bin holding non-positive photos;
    ``ita_vs_p_positive``: among non-positive photos, Spearman's rho of ITA with P(positive) within each class, and
    pooled within classes as the Pearson correlation of within-class fractional ranks (centred per class), which
    is Spearman's rho with the class differences removed; every class weighs by its size. ``per_class=False``
    leaves out the per-class rho and p (a bootstrap of the gap and the pooled rho needs neither).
    """
    from scipy import stats

    from mpoxscan.data.skin import BIN_NAMES, ita_bins

    classes = list(classes)
    y = np.asarray(list(y_true), object)
    pred = np.asarray(classes, object)[proba.argmax(axis=1)]
    has_pos = positive in classes
    score = proba[:, classes.index(positive)] if has_pos else np.zeros(len(y))
    flagged = score >= np.broadcast_to(np.asarray(threshold, float), score.shape)
    is_pos = y == positive
    tone = ita.astype(float) if isinstance(ita, np.ndarray) and ita.dtype.kind == "f" else \
        np.array([np.nan if v is None else float(v) for v in ita])
    bins = ita_bins(tone)
    per_bin: dict = {}
    for name in BIN_NAMES:
        m = bins == name
        pos, neg = m & is_pos, m & ~is_pos
        per_bin[name] = {"n": int(m.sum()), "n_positive": int(pos.sum()),
                         "accuracy": float((pred[m] == y[m]).mean()) if m.any() else float("nan"),
                         "sensitivity": float(flagged[pos].mean()) if pos.any() else float("nan"),
                         "specificity": float((~flagged[neg]).mean()) if neg.any() else float("nan")}
    with_neg = [b for b in BIN_NAMES if not math.isnan(per_bin[b]["specificity"])]
    gap = per_bin[with_neg[0]]["specificity"] - per_bin[with_neg[-1]]["specificity"] if len(with_neg) > 1 else float("nan")

    per_class_rho: dict = {}
    pooled_ita, pooled_p = [], []
    for c in classes:
        m = (y == c) & ~is_pos & ~np.isnan(tone)
        if c == positive or m.sum() < 3:
            continue
        if per_class:
            rho, p = stats.spearmanr(tone[m], score[m])
            per_class_rho[c] = {"n": int(m.sum()), "rho": float(rho), "p": float(p)}
        for values, into in ((tone[m], pooled_ita), (score[m], pooled_p)):
            into.append(stats.rankdata(values) / m.sum() - (m.sum() + 1) / (2 * m.sum()))
    pooled: dict = {"n": int(sum(len(v) for v in pooled_ita)), "rho": float("nan"), "p": float("nan")}
    if pooled["n"] >= 3:
        r = stats.pearsonr(np.concatenate(pooled_ita), np.concatenate(pooled_p))
        pooled.update(rho=float(r.statistic), p=float(r.pvalue))
    return {"bins": per_bin, "n_unknown": int((bins == None).sum()),  # noqa: E711 - element-wise
            "specificity_gap": {"lightest": with_neg[0] if with_neg else None, "darkest": with_neg[-1] if with_neg else None,
                                "gap": float(gap)},
            "ita_vs_p_positive": {"per_class": per_class_rho, "pooled_within_class": pooled,
                                  "pooled_method": "Pearson of within-class centred fractional ranks"}}


def answer_shares(labels: Sequence[str], answers: Sequence[str], groups: Sequence[str], n_boot: int = 2000,
                  seed: int = 0) -> dict[str, dict]:
    """Per true class, what the screening answered (``answers``: "positive", "negative" or "cannot tell", each
    photo's as the shipped rule gives it): the shares flagged positive and refused ("cannot tell"), each with a 95 %
    group-level bootstrap CI; for the positive class the first share is its sensitivity."""
    labels_a, answers_a = np.asarray(labels), np.asarray(answers)
    out = {}
    for c in sorted(set(labels_a.tolist())):
        index = np.flatnonzero(labels_a == c)

        def statistic(sub: np.ndarray, index=index) -> dict[str, float]:
            got = answers_a[index[sub]]
            return {"flagged": float(np.mean(got == "positive")), "cannot_tell": float(np.mean(got == "cannot tell"))}

        out[c] = {"n": int(len(index)), **patient_bootstrap(np.asarray(groups)[index], statistic, n_boot, seed)}
    return out
