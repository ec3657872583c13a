"""The pure parts of the pool benchmarks, on made-up data whose answers are known: ensemble_bench's fold-by-fold view
(leave one site out: site by site), mpox_count_loso_bench's group draws, colour_loso_bench's colour constancy."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import colour_loso_bench  # noqa: E402
import ensemble_bench  # noqa: E402
import mpox_count_loso_bench  # noqa: E402

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


def test_mpox_photos_are_drawn_by_whole_groups_until_there_are_enough():
    groups = [f"p{k // 3}" for k in range(30)]  # ten patients of three photos
    indices = list(range(0, 30, 1))
    for seed in range(5):
        drawn = mpox_count_loso_bench.draw_groups(indices, groups, 10, np.random.default_rng(seed))
        assert len(drawn) == 12 and len(set(drawn)) == 12  # four whole patients: the first count over 10
        assert all(sum(groups[k] == g for k in drawn) == 3 for g in {groups[k] for k in drawn})
    again = [mpox_count_loso_bench.draw_groups(indices, groups, 10, np.random.default_rng(s)) for s in (7, 7, 8)]
    assert again[0] == again[1] and set(again[0]) != set(again[2])  # one draw per seed
    assert sorted(mpox_count_loso_bench.draw_groups(indices, groups, 100, np.random.default_rng(0))) == indices


def test_shades_of_gray_turns_a_colour_cast_grey_and_keeps_a_grey_photo():
    from PIL import Image

    rng = np.random.default_rng(0)
    grey = rng.integers(60, 200, size=(40, 40, 1)).repeat(3, axis=2).astype(np.uint8)
    kept = np.asarray(colour_loso_bench.shades_of_gray(Image.fromarray(grey)), int)
    assert np.abs(kept - grey).max() <= 1  # a grey scene has a grey illuminant already
    cast = np.clip(grey * np.array([1.3, 1.0, 0.7]), 0, 255).astype(np.uint8)  # a warm light
    fixed = np.asarray(colour_loso_bench.shades_of_gray(Image.fromarray(cast)), float)
    means = fixed.reshape(-1, 3).mean(axis=0)
    assert means.max() - means.min() < 0.05 * means.mean()  # the cast is gone
    assert np.ptp(cast.reshape(-1, 3).mean(axis=0)) > 0.4 * cast.mean()  # and it was there
