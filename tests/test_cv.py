"""Training and cross-validation on a tiny generated dataset: it learns, folds keep groups apart, runs resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import SQUARE_CLASSES as CLASSES, square_photo

from mpoxscan.errors import MpoxscanError
from mpoxscan.preprocess import Preprocessing
from mpoxscan.training.cv import CVConfig, kept_rows, make_splits, run_cv

@pytest.fixture(scope="module")
def manifest(squares_manifest) -> Path:
    return squares_manifest


def test_splits_never_mix_groups(manifest):
    rows = kept_rows(manifest)
    for split in make_splits(rows, "kfold", seed=0):
        fit = {rows[k].group for k in split.train} | {rows[k].group for k in split.valid}
        assert not fit & {rows[k].group for k in split.test}
        assert not {rows[k].group for k in split.train} & {rows[k].group for k in split.valid}
        assert len(split.train) + len(split.valid) + len(split.test) == len(rows)


def test_official_protocol_needs_imported_splits(manifest):
    with pytest.raises(MpoxscanError, match="no imported splits"):
        make_splits(kept_rows(manifest), "official", 0)


@pytest.mark.parametrize("strategy, extra", [("linear", {}), ("finetune", {"finetune": {"epochs": 12, "batch_size": 8, "patience": 12}})])
def test_training_learns_and_resumes(manifest, tmp_path, strategy, extra):
    out = tmp_path / "run"
    config = CVConfig(manifest=str(manifest), models=["mobilenetv2_100"], strategy=strategy, protocol="kfold", views=1,
                      extra={"cache": str(tmp_path / "cache"), **extra})
    results = run_cv(config, out, progress=False)
    acc = results["models"]["mobilenetv2_100"]["summary"]["accuracy"]["mean"]
    assert acc >= 0.9, acc  # two colours of squares: any working training separates them
    preds = sorted((out / "predictions").glob("*.csv"))
    assert len(preds) == 4
    # Each fold's inner-validation predictions beside its test ones: the photos its calibration was fitted on.
    from mpoxscan.training.cv import read_fold

    rows, splits = kept_rows(manifest), make_splits(kept_rows(manifest), "kfold", 0)
    for split in splits:
        stem = f"mobilenetv2_100__{strategy}__{split.name}"
        labels, proba, info = read_fold(out / "predictions" / "valid", stem, results["classes"])
        assert labels == [rows[k].label for k in split.valid] and np.allclose(proba.sum(1), 1, atol=1e-4)
        assert info["temperature"] == read_fold(out / "predictions", stem, results["classes"])[2]["temperature"]
    # Resume: a finished fold is not recomputed; a deleted one is.
    stamp = preds[0].stat().st_mtime_ns
    preds[1].unlink()
    run_cv(CVConfig(**{**config.__dict__, "models": ["mobilenetv2_100"]}), out, progress=False)
    assert preds[0].stat().st_mtime_ns == stamp and preds[1].exists()
    # Another configuration in the same folder is refused.
    with pytest.raises(MpoxscanError, match=r"other settings \(seed 0 there, 1 now\)"):
        run_cv(CVConfig(**{**config.__dict__, "seed": 1}), out, progress=False)


def test_cli_cv_and_report(manifest, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "mpoxscan.cli"]
    proc = subprocess.run(cmd + ["cv", "--manifest", str(manifest), "--models", "mobilenetv2_100,efficientnet_lite0",
                                 "--views", "0", "--cache", str(tmp_path / "cache"), "--out", str(out), "--quiet"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "mobilenetv2_100" in proc.stdout and "accuracy" in proc.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["comparison"]["best"] in ("mobilenetv2_100", "efficientnet_lite0")
    proc = subprocess.run(cmd + ["report", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    md = (out / "report.md").read_text()
    assert "| model | params (M) | accuracy %" in md and "Statistical verdict" in md
    for png in ("folds_boxplot.png", "confusion.png", "roc_reliability.png"):
        assert (out / "plots" / png).stat().st_size > 1000
    assert "<table>" in (out / "report.html").read_text()
    bad = subprocess.run(cmd + ["report", str(tmp_path / "nothing")], capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.startswith("error:") and "Traceback" not in bad.stderr
    bad = subprocess.run(cmd + ["cv", "--manifest", str(manifest), "--models", "resnet", "--out", str(tmp_path / "x")],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "unknown model" in bad.stderr and "Traceback" not in bad.stderr


def test_train_writes_a_checkpoint_that_rebuilds_and_predicts(manifest, tmp_path):
    import torch

    from mpoxscan.training.train import load_checkpoint, train

    card = train(manifest, "mobilenetv2_100", "linear", tmp_path / "m", views=1, cache=tmp_path / "cache")
    assert card["classes"] == ["Healthy", "Monkeypox"] and 0 < card["screening_threshold"] <= 1
    assert card["data"]["images"] == 40 and len(card["data"]["manifest_sha256"]) == 64
    model, loaded = load_checkpoint(tmp_path / "m")
    assert loaded == json.loads((tmp_path / "m" / "card.json").read_text())
    prep = Preprocessing.from_dict(card["preprocessing"])
    x = torch.from_numpy(prep.batch([square_photo(CLASSES["Monkeypox"], 999), square_photo(CLASSES["Healthy"], 998)]))
    with torch.no_grad():
        pred = model(x).argmax(1).tolist()
    assert [card["classes"][k] for k in pred] == ["Monkeypox", "Healthy"]
    with pytest.raises(MpoxscanError, match="exists"):
        train(manifest, "mobilenetv2_100", "linear", tmp_path / "m", views=1, cache=tmp_path / "cache")
    (tmp_path / "junk.pt").write_bytes(b"nope")
    with pytest.raises(MpoxscanError, match="not an mpoxscan checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")


def test_finetune_at_another_input_size_caches_trains_and_exports_at_it(manifest, tmp_path):
    """finetune --input-size: the frozen part runs at that size (cached under its own name), the card and the
    exported file carry it, and the file screens at it."""
    from mpoxscan.deploy.export import to_onnx_fp32
    from mpoxscan.deploy.runtime import Screener
    from mpoxscan.training.train import load_checkpoint, train

    cache = tmp_path / "cache"
    card = train(manifest, "mobilenetv2_100", "finetune", tmp_path / "m", views=1, cache=cache,
                 options={"finetune": {"epochs": 12, "batch_size": 8, "patience": 12, "input_size": 96}})
    assert card["preprocessing"]["input_size"] == 96 and card["training"]["input_size"] == 96
    names = sorted(p.name for p in cache.rglob("*.npz"))
    assert names and all(n.endswith("-96px.npz") for n in names), names
    acts = np.load(next(cache.rglob("*view0*.npz")))["values"]
    assert acts.shape[-1] == 96 // 16  # the blocks MobileNetV2 fine-tunes start at stride 16 (14 x 14 at 224)
    model, card = load_checkpoint(tmp_path / "m")
    (tmp_path / "m.onnx").write_bytes(to_onnx_fp32(model, card).SerializeToString())
    screener = Screener(tmp_path / "m.onnx")
    assert screener.input_size == 96
    p = screener.predict_proba([square_photo(CLASSES["Monkeypox"], 999), square_photo(CLASSES["Healthy"], 998)])
    assert p.shape == (2, 2) and np.allclose(p.sum(1), 1, atol=1e-4)
    assert [card["classes"][k] for k in p.argmax(1)] == ["Monkeypox", "Healthy"]


def test_cv_scores_the_exported_files_of_each_fold(manifest, tmp_path):
    from mpoxscan.evaluation.report import write_report

    config = CVConfig(manifest=str(manifest), models=["mobilenetv2_100"], strategy="linear", protocol="kfold", views=0,
                      exports=["fp16", "int8"], int8_settings="u8u8-float-stem", extra={"cache": str(tmp_path / "cache")})
    results = run_cv(config, tmp_path / "run", progress=False)
    exports = results["models"]["mobilenetv2_100"]["exports"]
    # One named int8 candidate: each fold quantized with it, none measured against the others.
    selections = [json.loads(p.read_text())["int8_selection"] for p in (tmp_path / "run" / "predictions").glob("*onnx-int8.json")]
    assert len(selections) == 4 and all(set(s["trials"]) == {"u8u8-float-stem"} for s in selections)
    assert set(exports) == {"fp32", "fp16", "int8"}
    assert len(exports["int8"]["folds"]) == 4 and exports["fp32"]["agreement_with_fp32"]["mean"] == 1.0
    # The fp32 export is the PyTorch model itself: same accuracy on every fold.
    torch_acc = [f["metrics"]["accuracy"] for f in results["models"]["mobilenetv2_100"]["folds"]]
    assert [f["accuracy"] for f in exports["fp32"]["folds"]] == pytest.approx(torch_acc)
    assert exports["int8"]["accuracy"]["mean"] >= 0.9 and exports["int8"]["folds"][0]["bytes"] < exports["fp32"]["folds"][0]["bytes"] / 3
    md, _ = write_report(tmp_path / "run")
    assert "Accuracy of the exported files" in md.read_text() and "| mobilenetv2_100 | int8 |" in md.read_text()


def test_cv_answers_record_each_test_photo_under_the_folds_own_answer_rule(manifest, tmp_path):
    """`cv --answers` (issue 26, leave one site out at the rule that ships): every test photo of every fold gets the
    answer of the fold's own exported file, whose whole rule was fitted on that fold's photos only."""
    import csv

    from mpoxscan.deploy.runtime import Screener
    from mpoxscan.training.cv import read_fold

    config = CVConfig(manifest=str(manifest), models=["mobilenetv2_100"], strategy="linear", protocol="kfold", views=0,
                      answers=True, extra={"cache": str(tmp_path / "cache")})
    results = run_cv(config, tmp_path / "run", progress=False)
    rows, splits = kept_rows(manifest), make_splits(kept_rows(manifest), "kfold", 0)
    everything = []
    for split in splits:
        stem = f"mobilenetv2_100__linear__{split.name}"
        with open(tmp_path / "run" / "predictions" / "answers" / f"{stem}.csv", newline="") as fh:
            got = list(csv.DictReader(fh))
        assert [a["sha256"] for a in got] == [rows[k].sha256 for k in split.test]
        assert {a["answer"] for a in got} <= {"positive", "negative", "cannot tell"}
        assert all((a["answer"] == "cannot tell") == bool(a["reason"]) for a in got)
        _, proba, info = read_fold(tmp_path / "run" / "predictions", stem, results["classes"])
        judged = [a for a in got if a["answer"] != "cannot tell"]
        # the exported file's threshold is the fold's own, and its answers follow its probabilities
        assert all(float(a["threshold"]) == pytest.approx(info["threshold"], abs=1e-6) for a in got)
        wrong = [(a["answer"], a["p_positive"], a["threshold"]) for a in judged  # (the CSV rounds to 6 decimals)
                 if abs(float(a["p_positive"]) - float(a["threshold"])) > 1e-5
                 and (a["answer"] == "positive") != (float(a["p_positive"]) >= float(a["threshold"]))]
        assert not wrong
        rule = json.loads((tmp_path / "run" / "predictions" / "answers" / f"{stem}.json").read_text())["answer_rule"]
        # fitted on the fold's own photos (a conformal limit needs more inner-validation photos than these folds
        # have for the off-task check: 'offtask_photos' says how many it had)
        assert rule["notes"]["quality_photos"] == len(split.train) + len(split.valid)
        assert rule["notes"]["offtask_photos"] == len(split.valid)
        everything += got
    answers = results["models"]["mobilenetv2_100"]["answers"]
    assert set(answers["per_fold"]) == {s.name for s in splits}
    pooled = answers["pooled"]
    assert sum(c["n"] for c in pooled.values()) == len(rows)
    for c in ("Monkeypox", "Healthy"):  # the summary's shares are those of the recorded answers
        mine = [a["answer"] for a in everything if a["label"] == c]
        assert pooled[c]["flagged"]["value"] == pytest.approx(mine.count("positive") / len(mine))
        assert pooled[c]["cannot_tell"]["value"] == pytest.approx(mine.count("cannot tell") / len(mine))


def test_cv_on_ray_writes_the_same_run_and_resumes(manifest, tmp_path):
    """`cv --ray`: the (model, fold) tasks as Ray tasks write the same predictions as a run here; finished folds
    are not sent again."""
    try:
        import ray  # noqa: F401
    except ImportError:
        if os.environ.get("MPOXSCAN_REQUIRE_RAY"):
            pytest.fail("Ray is required here (make ray)")
        pytest.skip("needs the ray extra: make ray")
    cache = str(tmp_path / "cache")
    config = CVConfig(manifest=str(manifest), models=["mobilenetv2_100"], strategy="linear", protocol="kfold",
                      views=0, only_folds=["fold1"], extra={"cache": cache})
    here = run_cv(config, tmp_path / "here", progress=False)
    cmd = [sys.executable, "-m", "mpoxscan.cli", "cv", "--manifest", str(manifest), "--models", "mobilenetv2_100",
           "--views", "0", "--cache", cache, "--out", str(tmp_path / "ray"), "--quiet", "--ray"]
    proc = subprocess.run(cmd + ["--folds", "fold1"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    first = tmp_path / "ray" / "predictions" / "mobilenetv2_100__linear__fold1.csv"
    assert first.read_text() == (tmp_path / "here" / "predictions" / first.name).read_text()
    stamp = first.stat().st_mtime_ns
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)  # every fold now: fold1 is not redone
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert first.stat().st_mtime_ns == stamp
    results = json.loads((tmp_path / "ray" / "results.json").read_text())
    assert len(results["models"]["mobilenetv2_100"]["folds"]) == len({r.fold for r in kept_rows(manifest)})
    assert here["models"]["mobilenetv2_100"]["folds"][0]["metrics"]["accuracy"] == \
        results["models"]["mobilenetv2_100"]["folds"][0]["metrics"]["accuracy"]
