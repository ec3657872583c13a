"""The shipped operating point and the figures that describe exactly it (issue 26, item 4).

A threshold chosen on one inner-validation split rests on a few dozen mpox photos; applied to out-of-fold
predictions it gave 87 % sensitivity where the card promised 95 %. Here the threshold comes from the pooled
out-of-fold predictions of the shipped recipe (hundreds of mpox photos), and every figure is recomputed at that
one threshold, with group-level bootstrap intervals: sensitivity, specificity, per class the share flagged
positive, and the positive predictive value at the prevalences a screening service may meet.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from mpoxscan.evaluation.metrics import POSITIVE, answer_shares, pooled_summary, screening_threshold

PREVALENCES = (0.01, 0.10, 0.30)


@dataclass
class Predictions:
    """Pooled per-image predictions of one run (oof_predictions.csv or valid_predictions.csv)."""

    labels: list[str]
    proba: np.ndarray  # (n, classes)
    classes: list[str]
    groups: list[str]
    folds: list[str]
    fold_thresholds: np.ndarray  # each image's own fold's threshold

    def positive(self, positive: str = POSITIVE) -> np.ndarray:
        return self.proba[:, self.classes.index(positive)]


def read_predictions(path: Path | str, variant: str = "main") -> Predictions:
    """The rows of ``variant`` (the run's own predictions by default) from a cv run's predictions CSV."""
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        classes = [c[2:] for c in reader.fieldnames or [] if c.startswith("p_")]
        rows = [r for r in reader if r.get("variant", "main") == variant]
    return Predictions([r["label"] for r in rows], np.array([[float(r[f"p_{c}"]) for c in classes] for r in rows]),
                       classes, [r["group"] for r in rows], [r["fold"] for r in rows],
                       np.array([float(r["threshold"]) for r in rows]) if rows and "threshold" in rows[0] else np.array([]))


def operating_point(pred: Predictions, sensitivity: float = 0.95, n_boot: int = 2000, seed: int = 0) -> dict:
    """The highest threshold that flags ``sensitivity`` of the pooled mpox photos, and the sensitivity and
    specificity it gives with 95 % group-level bootstrap intervals (the threshold fixed, the photos resampled)."""
    is_pos = np.array([y == POSITIVE for y in pred.labels])
    score = pred.positive()
    threshold = screening_threshold(is_pos, score, sensitivity)
    at = figures_at(pred, threshold, n_boot=n_boot, seed=seed)
    return {"threshold": float(threshold), "target_sensitivity": sensitivity, "n_images": len(pred.labels),
            "n_positive": int(is_pos.sum()), "sensitivity": at["metrics"]["sensitivity"],
            "specificity": at["metrics"]["specificity"]}


def figures_at(pred: Predictions, threshold: float, prevalences: Sequence[float] = PREVALENCES, n_boot: int = 2000,
               seed: int = 0) -> dict:
    """Every pooled figure with each photo screened at one ``threshold``: accuracy, macro-F1, mpox AUC,
    sensitivity, specificity, PPV at each prevalence (patient-level bootstrap CIs), and per class the share
    flagged positive."""
    out = pooled_summary(pred.labels, pred.proba, pred.classes, pred.groups, np.full(len(pred.labels), threshold),
                         n_boot=n_boot, seed=seed, prevalences=prevalences)
    flagged = np.where(pred.positive() >= threshold, "positive", "negative")
    out["threshold"] = float(threshold)
    out["per_class"] = answer_shares(pred.labels, flagged.tolist(), pred.groups, n_boot, seed)
    for c in out["per_class"].values():
        c.pop("cannot_tell", None)  # probabilities alone: the answer rule's refusals are in the answers' figures
    return out
