"""Pooled out-of-fold statistics: PPV by Bayes' rule, the patient-level bootstrap, pooled ECE."""

from __future__ import annotations

import numpy as np
import pytest

from mpoxscan.evaluation.metrics import patient_bootstrap, pooled_summary, ppv_at_prevalence

CLASSES = ["Healthy", "Monkeypox"]


def test_ppv_by_hand():
    # 1000 people, 10 % ill: 90 of 100 found, 900 * 0.2 = 180 false alarms -> 90 / 270.
    assert ppv_at_prevalence(0.9, 0.8, 0.10) == pytest.approx(90 / 270)
    assert ppv_at_prevalence(0.9, 1.0, 0.01) == pytest.approx(1.0)
    assert ppv_at_prevalence(0.95, 0.5, 0.01) < 0.02  # a screening tool at low prevalence: mostly false alarms


def test_bootstrap_resamples_whole_patients():
    # Each patient's photos share one value; the statistic sees whole groups or nothing.
    groups = np.repeat([f"P{k}" for k in range(20)], 5)
    values = np.repeat(np.arange(20, dtype=float), 5)
    seen_sizes = set()

    def stat(index):
        seen_sizes.add(len(index) % 5)
        return {"mean": float(values[index].mean())}

    out = patient_bootstrap(groups, stat, n_boot=300, seed=1)["mean"]
    assert seen_sizes == {0}
    assert out["value"] == pytest.approx(9.5)
    lo, hi = out["ci95"]
    assert lo < 9.5 < hi and hi - lo > 2  # 20 groups with spread 0..19: a wide interval


def test_patient_clustering_widens_the_interval():
    rng = np.random.default_rng(0)
    n_patients, shots = 30, 10
    correct_patient = rng.random(n_patients) < 0.7  # a patient's photos are all right or all wrong
    y = np.array(["Monkeypox"] * (n_patients * shots))
    p_right = np.tile([0.2, 0.8], (len(y), 1))
    proba = np.where(np.repeat(correct_patient, shots)[:, None], p_right, p_right[:, ::-1])
    clustered = pooled_summary(y, proba, CLASSES, np.repeat(np.arange(n_patients), shots).astype(str), n_boot=400)
    independent = pooled_summary(y, proba, CLASSES, np.arange(len(y)).astype(str), n_boot=400)
    width = lambda s: np.diff(s["metrics"]["accuracy"]["ci95"])[0]  # noqa: E731
    assert width(clustered) > 2 * width(independent)


def test_pooled_summary_thresholds_ece_and_ppv():
    y = ["Monkeypox", "Monkeypox", "Healthy", "Healthy", "Monkeypox", "Healthy"]
    p_pos = np.array([0.9, 0.4, 0.3, 0.6, 0.7, 0.1])
    proba = np.column_stack([1 - p_pos, p_pos])
    thresholds = np.array([0.5, 0.5, 0.5, 0.5, 0.35, 0.35])  # two folds, each with its own threshold
    s = pooled_summary(y, proba, CLASSES, ["a", "b", "c", "d", "e", "f"], thresholds, n_boot=200)
    m = s["metrics"]
    assert m["sensitivity"]["value"] == pytest.approx(2 / 3)  # 0.9 and 0.7 flagged, 0.4 missed
    assert m["specificity"]["value"] == pytest.approx(2 / 3)  # 0.6 flagged
    assert m["ppv_at_0.1"]["value"] == pytest.approx(ppv_at_prevalence(2 / 3, 2 / 3, 0.1))
    assert m["accuracy"]["value"] == pytest.approx(4 / 6)
    assert 0 < s["ece"] < 1 and s["n_groups"] == 6


def test_point_metrics_match_scikit_learn():
    from sklearn import metrics as skm

    from mpoxscan.evaluation.metrics import pooled_point_metrics

    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 200)
    y[y == 3] = 2  # class 3 never true
    proba = rng.dirichlet(np.ones(4), 200)
    m = pooled_point_metrics(y, proba, None, None)
    pred = proba.argmax(1)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, pred, labels=[0, 1, 2, 3], average="macro", zero_division=0))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
