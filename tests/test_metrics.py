"""Metrics against values computed by hand on small examples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mpoxscan.evaluation.metrics import (classification_metrics, corrected_resampled_ttest, expected_calibration_error,
                                         friedman, mean_sd_ci, screening_threshold)

CLASSES = ["Healthy", "Monkeypox", "Measles"]


def onehot_proba(preds, conf=0.8):
    p = np.full((len(preds), 3), (1 - conf) / 2)
    for i, c in enumerate(preds):
        p[i, CLASSES.index(c)] = conf
    return p


def test_accuracy_f1_kappa_confusion_by_hand():
    y = ["Monkeypox", "Monkeypox", "Monkeypox", "Healthy", "Healthy", "Measles"]
    pred = ["Monkeypox", "Monkeypox", "Healthy", "Healthy", "Monkeypox", "Measles"]
    m = classification_metrics(y, onehot_proba(pred), CLASSES)
    assert m["accuracy"] == pytest.approx(4 / 6)
    # per class: Healthy P=1/2 R=1/2; Monkeypox P=2/3 R=2/3; Measles P=1 R=1
    assert m["per_class"]["Monkeypox"]["precision"] == pytest.approx(2 / 3)
    assert m["macro_recall"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert m["balanced_accuracy"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert m["macro_f1"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert m["confusion_matrix"] == [[1, 1, 0], [1, 2, 0], [0, 0, 1]]
    # kappa: po = 4/6; pe = sum(row_i * col_i)/n^2 = (2*2 + 3*3 + 1*1)/36 = 14/36
    assert m["cohen_kappa"] == pytest.approx((4 / 6 - 14 / 36) / (1 - 14 / 36))
    s = m["screening"]
    assert s["sensitivity"] == pytest.approx(2 / 3) and s["specificity"] == pytest.approx(2 / 3)  # threshold 0.5
    assert s["auc"] == pytest.approx(6 / 9)  # P(score of a case > score of a non-case), ties count half


def test_perfect_predictions():
    y = ["Healthy", "Monkeypox", "Measles"] * 3
    m = classification_metrics(y, onehot_proba(y, conf=0.9), CLASSES)
    assert m["accuracy"] == 1 and m["cohen_kappa"] == 1 and m["macro_auc_ovr"] == 1 and m["screening"]["auc"] == 1


def test_auc_over_the_classes_present_when_the_model_gives_them_almost_nothing():
    """A test fold whose classes the model barely considers (a linear probe's class without training photos, under
    leave one site out): the one-vs-rest AUC is still taken over the classes present, renormalised."""
    y = ["Healthy", "Measles", "Healthy", "Measles"]
    p = np.array([[1e-14, 1.0, 1e-16], [1e-16, 1.0, 1e-14], [3e-15, 1.0, 1e-16], [0.0, 1.0, 1e-17]])
    m = classification_metrics(y, p, CLASSES)
    assert m["macro_auc_ovr"] == pytest.approx(1.0)  # P(Measles) / (P(Healthy) + P(Measles)) ranks them right
    assert classification_metrics(y, np.array([[0, 1, 0]] * 4, float), CLASSES)["macro_auc_ovr"] == 0.5


def test_ece_by_hand():
    # Two predictions at confidence 0.9 (one right), two at 0.6 (both right): ECE = 0.5*|0.5-0.9| + 0.5*|1-0.6| = 0.4
    proba = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6]])
    y = np.array([0, 1, 0, 1])
    assert expected_calibration_error(y, proba) == pytest.approx(0.4)


def test_screening_threshold_reaches_the_sensitivity():
    is_pos = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    score = np.array([0.9, 0.8, 0.7, 0.3, 0.6, 0.2, 0.1, 0.05])
    assert screening_threshold(is_pos, score, 0.75) == pytest.approx(0.7)
    assert screening_threshold(is_pos, score, 1.0) == pytest.approx(0.3)


def test_mean_sd_ci_by_hand():
    r = mean_sd_ci([0.8, 0.9, 1.0])
    assert r["mean"] == pytest.approx(0.9) and r["sd"] == pytest.approx(0.1)
    # t(0.975, 2) = 4.302653
    assert r["ci95"][1] - 0.9 == pytest.approx(4.302653 * 0.1 / math.sqrt(3), rel=1e-5)


def test_corrected_ttest_is_more_conservative_than_the_plain_one():
    from scipy import stats

    a = [0.85, 0.88, 0.84, 0.90, 0.87]
    b = [0.80, 0.86, 0.83, 0.85, 0.82]
    res = corrected_resampled_ttest(a, b, test_fraction=0.2)
    d = np.subtract(a, b)
    t_by_hand = d.mean() / math.sqrt((1 / 5 + 0.2 / 0.8) * d.var(ddof=1))
    assert res["t"] == pytest.approx(t_by_hand)
    assert res["p"] > stats.ttest_rel(a, b).pvalue


def test_friedman_needs_three_models():
    assert math.isnan(friedman({"a": [1, 2], "b": [1, 2]})["p"])
    r = friedman({"a": [0.9, 0.8, 0.85, 0.9], "b": [0.7, 0.6, 0.65, 0.7], "c": [0.5, 0.55, 0.5, 0.52]})
    assert r["p"] < 0.05


def test_rank_auc_is_scikit_learns_auc_with_ties():
    """The bootstrap's AUC (Mann-Whitney over average ranks) against roc_auc_score, on scores with many ties (as
    rounded probabilities have) and without, and on a perfect and a reversed ranking."""
    from sklearn.metrics import roc_auc_score

    from mpoxscan.evaluation.metrics import rank_auc

    rng = np.random.default_rng(3)
    for n, digits in [(40, 1), (300, 2), (500, None)]:
        y = rng.random(n) < 0.3
        score = np.clip(0.5 * y + rng.normal(0.25, 0.3, n), 0, 1)
        if digits is not None:
            score = np.round(score, digits)
        assert rank_auc(y, score) == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    y = np.array([0, 0, 1, 1], bool)
    assert rank_auc(y, np.array([0.1, 0.2, 0.3, 0.4])) == 1.0
    assert rank_auc(y, np.array([0.4, 0.3, 0.2, 0.1])) == 0.0
    assert rank_auc(y, np.full(4, 0.5)) == 0.5


def test_paired_screening_counts_each_figure_on_its_own_photos():
    from mpoxscan.evaluation.metrics import paired_screening

    mpox = np.array([True, True, True, False, False, False, False])
    right = (np.array([1, 1, 0, 1, 1, 1, 0], bool), np.array([1, 0, 0, 1, 0, 0, 0], bool))
    flagged = (np.array([1, 1, 1, 0, 0, 1, 0], bool), np.array([1, 0, 1, 1, 1, 1, 0], bool))
    got = paired_screening(mpox, right, flagged)
    assert (got["accuracy"]["only_first"], got["accuracy"]["only_second"]) == (3, 0)
    assert (got["mpox_flagged"]["only_first"], got["mpox_flagged"]["only_second"]) == (1, 0)  # mpox photos only
    # look-alikes not flagged: the first model spares photos 4 and 5, which the second flags
    assert (got["look_alikes_not_flagged"]["only_first"], got["look_alikes_not_flagged"]["only_second"]) == (2, 0)
    assert got["accuracy"]["p_first_worse"] == 1.0 and got["accuracy"]["p_value"] == 0.25
