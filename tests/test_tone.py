"""Skin-tone fairness: the per-tone metrics, tone-balanced weights, skin-tone views, and their place in cv/report."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mpoxscan.data.manifest import read_manifest, write_manifest
from mpoxscan.evaluation.metrics import tone_metrics
from mpoxscan.training.finetune import tone_balance_weights

CLASSES = ["Healthy", "Measles", "Monkeypox"]


def _proba(p_pos: np.ndarray) -> np.ndarray:
    """Three-class probabilities with the given P(Monkeypox), the rest split evenly."""
    rest = (1 - p_pos) / 2
    return np.stack([rest, rest, p_pos], axis=1)


def test_tone_metrics_find_a_bias_towards_dark_skin():
    rng = np.random.default_rng(0)
    ita = np.concatenate([rng.uniform(60, 80, 50), rng.uniform(-60, -35, 50)])  # very light, then dark
    labels = ["Healthy"] * 25 + ["Monkeypox"] * 25 + ["Healthy"] * 25 + ["Monkeypox"] * 25
    # Negatives on dark skin get a higher P(mpox): half of them are flagged at 0.5, none of the light ones.
    p = np.where(np.array(labels) == "Monkeypox", 0.9, np.where(ita < 0, 0.3 + 0.4 * rng.random(100), 0.1))
    t = tone_metrics(labels, _proba(p), CLASSES, list(ita), threshold=0.5)
    assert t["bins"]["very light"]["specificity"] == 1.0 and t["bins"]["dark"]["specificity"] < 0.8
    assert t["bins"]["dark"]["sensitivity"] == 1.0 and t["bins"]["tan"]["n"] == 0
    assert t["specificity_gap"] == {"lightest": "very light", "darkest": "dark", "gap": pytest.approx(1 - t["bins"]["dark"]["specificity"])}
    assert t["ita_vs_p_positive"]["per_class"]["Healthy"]["rho"] < -0.5
    assert t["ita_vs_p_positive"]["pooled_within_class"]["rho"] < -0.5


def test_pooled_correlation_ignores_differences_between_classes():
    """Measles photos all dark and all high P(mpox), Healthy all light and low: no correlation *within* a class,
    although pooling the photos naively would show a strong one."""
    rng = np.random.default_rng(1)
    ita = np.concatenate([rng.uniform(-60, -30, 200), rng.uniform(40, 80, 200)])
    labels = ["Measles"] * 200 + ["Healthy"] * 200
    p = np.concatenate([0.5 + 0.2 * rng.random(200), 0.1 * rng.random(200)])
    t = tone_metrics(labels, _proba(p), CLASSES, list(ita), threshold=np.full(400, 0.5))
    assert abs(t["ita_vs_p_positive"]["pooled_within_class"]["rho"]) < 0.15
    assert t["ita_vs_p_positive"]["pooled_within_class"]["n"] == 400


def test_unknown_tones_are_counted_apart():
    t = tone_metrics(["Healthy", "Monkeypox"], _proba(np.array([0.1, 0.9])), CLASSES, [None, 20.0])
    assert t["n_unknown"] == 1 and t["bins"]["tan"]["n"] == 1


def test_tone_balance_gives_every_bin_the_overall_class_mix():
    labels = ["M"] * 60 + ["H"] * 20 + ["M"] * 20 + ["H"] * 60 + ["H"] * 5
    bins = ["dark"] * 80 + ["very light"] * 80 + [None] * 5
    w = tone_balance_weights(labels, bins)
    lab, b = np.array(labels), np.array([x or "" for x in bins])
    overall = np.mean(lab == "M")
    for name in ("dark", "very light"):
        m = b == name
        assert w[m & (lab == "M")].sum() / w[m].sum() == pytest.approx(overall)
    assert np.all(w <= 4) and np.all(w >= 0.25)


def test_tone_views_are_cached_apart_and_view_zero_is_shared(squares_manifest, tmp_path):
    """cv with --tone-balance, --tone-views and --jpeg-views learns, records the tone figures, and the report shows
    them."""
    from mpoxscan.evaluation.report import write_report
    from mpoxscan.training.cv import CVConfig, run_cv

    rows = read_manifest(squares_manifest)
    for k, r in enumerate(rows):  # give the squares skin tones, mpox mostly dark
        r.ita = str(-40.0 if (r.label == "Monkeypox") == (k % 4 != 0) else 60.0)
    write_manifest(tmp_path / "manifest.csv", rows)
    cache = tmp_path / "cache"
    config = CVConfig(manifest=str(tmp_path / "manifest.csv"), models=["mobilenetv2_100"], strategy="finetune",
                      protocol="kfold", views=1, only_folds=["fold1"],
                      extra={"cache": str(cache), "finetune": {"epochs": 2, "batch_size": 16, "tone_balance": True,
                                                               "tone_views": True, "jpeg_views": True}})
    results = run_cv(config, tmp_path / "run", progress=False)
    model = results["models"]["mobilenetv2_100"]
    info = model["folds"][0]["info"]
    assert info["tone_balance"] and info["tone_views"] and info["jpeg_views"]
    assert set(model["tone"]["bins"]) >= {"very light", "dark"} and model["tone"]["bins"]["dark"]["n"] > 0
    names = sorted(p.name for p in cache.rglob("*.npz"))
    assert any("view1-seed0-tone-jpeg" in n for n in names) and any("view0-seed0." in n for n in names)
    assert not any("view0-seed0-tone" in n for n in names) and not any(n.endswith("view1-seed0.npz") for n in names)
    md, _ = write_report(tmp_path / "run")
    text = md.read_text()
    assert "## Skin tone" in text and "pooled within-class rho" in text
    assert (tmp_path / "run" / "plots" / "tone.png").stat().st_size > 1000


def test_tone_view_changes_the_skin_but_not_the_plain_view():
    from mpoxscan.preprocess import Preprocessing
    from mpoxscan.training.views import make_view

    skin = Image.fromarray(np.full((64, 64, 3), (236, 200, 180), np.uint8))
    prep = Preprocessing(input_size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert make_view(skin, prep, "ab", 0, tone=True).tobytes() == make_view(skin, prep, "ab", 0).tobytes()
    toned = [np.asarray(make_view(skin, prep, "ab", v, tone=True), float).mean() for v in range(1, 6)]
    plain = [np.asarray(make_view(skin, prep, "ab", v), float).mean() for v in range(1, 6)]
    assert max(abs(a - b) for a, b in zip(toned, plain)) > 20


def test_jpeg_views_compress_some_views_and_keep_their_geometry():
    from mpoxscan.preprocess import Preprocessing
    from mpoxscan.training.views import make_view

    rng = np.random.default_rng(0)
    # Smooth colour blobs plus fine grain: JPEG at q <= 60 visibly changes the grain, not the blobs.
    blobs = np.asarray(Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((96, 96), Image.BICUBIC))
    noise = Image.fromarray(np.clip(blobs + rng.normal(0, 12, blobs.shape), 0, 255).astype(np.uint8))
    prep = Preprocessing(input_size=48, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert make_view(noise, prep, "ab", 0, jpeg=True).tobytes() == make_view(noise, prep, "ab", 0).tobytes()
    changed = []
    for v in range(1, 21):
        plain = np.asarray(make_view(noise, prep, "ab", v), float)
        squeezed = np.asarray(make_view(noise, prep, "ab", v, jpeg=True), float)
        # Same crop, flips and colour: the compressed view stays far closer to its own plain view than to another.
        other = np.asarray(make_view(noise, prep, "ab", v + 1), float)
        assert np.abs(plain - squeezed).mean() < 0.5 * np.abs(other - squeezed).mean()
        changed.append(np.abs(plain - squeezed).mean() > 1.0)
        assert make_view(noise, prep, "ab", v, jpeg=True).tobytes() == squeezed.astype(np.uint8).tobytes()
    assert 4 <= sum(changed) <= 16  # about half of the views are compressed


def test_tone_options_belong_to_finetune(squares_manifest, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mpoxscan.cli", "cv", "--manifest", str(squares_manifest), "--models",
                           "mobilenetv2_100", "--tone-balance", "--out", str(tmp_path / "x")], capture_output=True, text=True)
    assert proc.returncode == 1 and "options of --strategy finetune" in proc.stderr


def test_tone_balance_refuses_a_manifest_without_tones(squares_manifest):
    from mpoxscan.errors import MpoxscanError
    from mpoxscan.training.cv import CVConfig, kept_rows, make_splits
    from mpoxscan.training.finetune import finetune_fold

    rows = kept_rows(squares_manifest)
    for r in rows:
        r.ita = ""
    for options in ({"tone_balance": True}, {"tone_decorrelation": True}):
        config = CVConfig(manifest=str(squares_manifest), models=[], strategy="finetune", protocol="kfold",
                          extra={"finetune": options})
        with pytest.raises(MpoxscanError, match="need skin tones"):
            finetune_fold("mobilenetv2_100", rows, make_splits(rows, "kfold", 0)[0], ["Healthy", "Monkeypox"], config)


def test_tone_correlation_is_the_pooled_within_class_correlation_and_has_a_gradient():
    """The decorrelation penalty: Pearson of ITA with the mpox log-odds, each non-mpox class centred on its own means,
    mpox rows and rows without a tone left out; differentiable, so that training can push it to zero."""
    import torch

    from mpoxscan.training.finetune import tone_correlation

    rng = np.random.default_rng(0)
    n, positive = 40, 2
    logits = torch.tensor(rng.normal(size=(n, 4)), dtype=torch.float32, requires_grad=True)
    target = torch.tensor(rng.integers(0, 4, n))
    ita = torch.tensor(rng.uniform(-40, 60, n), dtype=torch.float32)
    ita[:3] = float("nan")
    got = tone_correlation(logits, target, ita, positive)
    got.backward()
    assert logits.grad is not None and float(logits.grad.abs().sum()) > 0
    lg, t, it = logits.detach().numpy(), target.numpy(), ita.numpy()
    others = np.delete(lg, positive, axis=1)
    odds = lg[:, positive] - np.log(np.exp(others).sum(1))
    keep = (t != positive) & ~np.isnan(it)
    z = np.concatenate([odds[keep & (t == c)] - odds[keep & (t == c)].mean() for c in (0, 1, 3)])
    x = np.concatenate([it[keep & (t == c)] - it[keep & (t == c)].mean() for c in (0, 1, 3)])
    assert float(got) == pytest.approx(float((z * x).sum() / np.sqrt((z ** 2).sum() * (x ** 2).sum())), abs=1e-5)
    # A class-level offset (one class darker and more mpox-like) is not a within-class trend.
    target = torch.tensor([0] * 10 + [1] * 10)
    ita = torch.tensor(list(range(10)) * 2, dtype=torch.float32)
    flat = torch.zeros(20, 3)
    flat[10:, positive] = 5.0
    assert float(tone_correlation(flat, target, ita, positive)) == 0.0
    assert float(tone_correlation(flat[:1], target[:1], ita[:1], positive)) == 0.0  # too few rows: no penalty


def test_the_finetune_flags_reach_cv_and_train_from_the_command_line(squares_manifest, tmp_path, monkeypatch):
    """Each of the finetune strategy's flags, given to `cv` and to `train`, arrives in the strategy's options."""
    from click.testing import CliRunner

    import mpoxscan.training.cv as cv
    import mpoxscan.training.train as train
    from mpoxscan.cli import cli

    got = {}

    def run_cv(config, out, **kw):  # record what would have been trained, and stop there
        got["cv"] = config.extra
        raise SystemExit(0)

    def run_train(*args, options=None, **kw):
        got["train"] = options
        raise SystemExit(0)

    monkeypatch.setattr(cv, "run_cv", run_cv)
    monkeypatch.setattr(train, "train", run_train)
    flags = ["--tone-balance", "--tone-views", "--tone-decorrelation", "--jpeg-views"]
    expected = {"tone_balance": True, "tone_views": True, "tone_decorrelation": True, "jpeg_views": True}
    runner = CliRunner()
    runner.invoke(cli, ["cv", "--manifest", str(squares_manifest), "--models", "mobilenetv2_100", "--strategy",
                        "finetune", "--out", str(tmp_path / "cv"), "--cache", str(tmp_path / "c"), *flags,
                        "--input-size", "288"])
    runner.invoke(cli, ["train", "--manifest", str(squares_manifest), "--model", "mobilenetv2_100", "--strategy",
                        "finetune", "--out", str(tmp_path / "train"), flags[2], "--input-size", "256"])
    assert got["cv"]["finetune"] == {**expected, "input_size": 288} and got["cv"]["cache"] == str(tmp_path / "c")
    assert got["train"]["finetune"] == {"tone_decorrelation": True, "input_size": 256} and "cache" not in got["train"]
    got.clear()
    refused = runner.invoke(cli, ["cv", "--manifest", str(squares_manifest), "--models", "mobilenetv2_100", "--strategy",
                                  "finetune", "--out", str(tmp_path / "cv"), "--epochs", "3"])
    assert refused.exit_code == 1 and not got
    assert "--epochs: options of the full and distill strategies, not of finetune" in refused.output
