"""benchmarks/ensemble_bench.py's fold-by-fold view (leave one site out: site by site), on made-up predictions
whose answers are known."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import ensemble_bench  # noqa: E402

CLASSES = ["Chickenpox", "Healthy", "Monkeypox"]


def _fold(labels: list[str], p_mpox: np.ndarray, tag: str) -> tuple:
    """read_fold_keys' tuple: the other two classes share what mpox leaves."""
    proba = np.column_stack([(1 - p_mpox) / 2, (1 - p_mpox) / 2, p_mpox])
    return labels, proba, {"threshold": 0.5}, [(f"{tag}{k}", f"{tag}/{k}.jpg") for k in range(len(labels))]


def _member(rng: np.random.Generator, noise: float) -> tuple[dict, dict]:
    folds = {}
    for site in ("east", "west"):
        labels = ["Monkeypox"] * 30 + ["Chickenpox"] * 20 + ["Healthy"] * 20
        signal = np.array([1.0 if y == "Monkeypox" else 0.0 for y in labels])
        score = lambda: 1 / (1 + np.exp(-(2 * signal - 1 + rng.normal(0, noise, len(labels)))))  # noqa: E731
        folds[site] = (_fold(labels, score(), f"{site}-test-"), _fold(labels, score(), f"{site}-valid-"))
    return {"classes": CLASSES}, folds


def test_per_fold_scores_each_run_and_their_average_on_the_same_photos():
    rng = np.random.default_rng(0)
    a, b = _member(rng, 1.2), _member(rng, 1.2)
    groups = {sha: SimpleNamespace(group=sha) for m in (a, b) for t, v in m[1].values() for sha, _ in t[3] + v[3]}
    folds = ensemble_bench.per_fold([a, b], ["a", "b"], groups, n_boot=200)
    assert list(folds) == ["east", "west"]
    for site, e in folds.items():
        (ta, va), (tb, vb) = a[1][site], b[1][site]
        positive = np.array(ta[0]) == "Monkeypox"
        auc = {n: ensemble_bench.rank_auc(positive, p) for n, p in
               (("a", ta[1][:, 2]), ("b", tb[1][:, 2]), ("averaged", (ta[1][:, 2] + tb[1][:, 2]) / 2))}
        assert e["photos"] == 70 and e["mpox"] == 30
        for n in auc:
            assert e["auc"][n]["value"] == pytest.approx(auc[n])
        gain = e["averaged_minus_members_mean"]
        assert gain["value"] == pytest.approx(auc["averaged"] - (auc["a"] + auc["b"]) / 2)
        assert gain["ci95"][0] <= gain["value"] <= gain["ci95"][1]
        # Each one flags at its own threshold, chosen on its inner validation (never on these test photos).
        for n, (t, v) in (("a", (ta, va)), ("b", (tb, vb))):
            threshold = ensemble_bench.screening_threshold(np.array(v[0]) == "Monkeypox", v[1][:, 2])
            assert e["threshold"][n] == pytest.approx(threshold)
            for c in CLASSES:
                mask = np.array(t[0]) == c
                assert e["flagged"][n][c] == pytest.approx(float((t[1][mask, 2] >= threshold).mean()))
    lines = "\n".join(ensemble_bench.per_fold_lines(folds, ["a", "b"]))
    assert "| east | 70 (30) |" in lines and "| west | Monkeypox |" in lines


def test_one_run_averaged_with_itself_gains_nothing():
    a = _member(np.random.default_rng(1), 1.0)
    groups = {sha: SimpleNamespace(group=sha) for t, v in a[1].values() for sha, _ in t[3] + v[3]}
    for e in ensemble_bench.per_fold([a, a], ["a", "again"], groups, n_boot=50).values():
        assert e["averaged_minus_members_mean"]["value"] == 0 and e["spearman"] == pytest.approx(1)
        assert e["flagged"]["a"] == e["flagged"]["averaged"]


def test_runs_on_other_photos_are_refused():
    a, b = _member(np.random.default_rng(2), 1.0), _member(np.random.default_rng(3), 1.0)
    t, v = b[1]["east"]
    b[1]["east"] = (t[:3] + ([("other", "x.jpg")] + t[3][1:],), v)
    groups = {sha: SimpleNamespace(group=sha) for m in (a, b) for t, v in m[1].values() for sha, _ in t[3] + v[3]}
    with pytest.raises(SystemExit, match="do not share their test photos"):
        ensemble_bench.per_fold([a, b], ["a", "b"], groups, n_boot=10)
