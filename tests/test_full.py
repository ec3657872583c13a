"""The whole-network strategies on the CPU, on tiny generated photos: correctness, not accuracy."""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest
import torch

from mpoxscan.errors import MpoxscanError
from mpoxscan.training.augment import augment_batch, dihedral, mix
from mpoxscan.training.cv import CVConfig, kept_rows, make_splits, run_cv
from mpoxscan.training.full import (FullParams, backbone_stages, distillation_loss, freeze_backbone, make_optimizer,
                                    steps_per_epoch, train_network, warmup_cosine)

TINY = {"epochs": 2, "batch_size": 8, "input_size": 32, "threads": 1, "eval_batch": 16}
# Enough to learn the squares' colour (measured: 0.93 pooled accuracy; 2 epochs at 32 px stay at chance).
LEARNS = {**TINY, "epochs": 4, "input_size": 48, "warmup_epochs": 0.5, "lr": 3e-3}


def test_full_scale_augmentation_is_an_exact_flip_or_turn():
    images = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    out = augment_batch(images, 8, torch.Generator().manual_seed(0), min_scale=1.0, jitter=0.0, ratio=(1.0, 1.0))
    # Whole-image square crops: every output must be one of the 8 symmetries of its input (no interpolation blur).
    x = images.float() / 255
    seen = set()
    for i in range(16):
        errors = [float((out[i] - dihedral(x[i], k)).abs().max()) for k in range(8)]
        seen.add(int(np.argmin(errors)))
        assert min(errors) < 1e-5, errors
    assert len(seen) >= 3  # several different symmetries were drawn


def test_augmentation_shapes_range_and_determinism():
    images = torch.randint(0, 256, (5, 3, 40, 40), dtype=torch.uint8)
    a = augment_batch(images, 24, torch.Generator().manual_seed(1))
    b = augment_batch(images, 24, torch.Generator().manual_seed(1))
    assert a.shape == (5, 3, 24, 24) and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, augment_batch(images, 24, torch.Generator().manual_seed(2)))


def test_mixup_keeps_targets_summing_to_one():
    x = torch.rand(6, 3, 16, 16)
    y = torch.nn.functional.one_hot(torch.arange(6) % 3, 3).float()
    for kind in ({"mixup": 0.4}, {"cutmix": 1.0}):
        mx, my = mix(x, y, torch.Generator().manual_seed(0), **kind)
        assert mx.shape == x.shape and torch.allclose(my.sum(1), torch.ones(6))
    assert mix(x, y, torch.Generator())[0] is x  # off by default


def test_warmup_then_cosine():
    total, warm = 100, 10
    f = [warmup_cosine(s, total, warm) for s in range(total)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(f[:9], f[1:10]))  # rises during warm-up
    assert all(a >= b for a, b in zip(f[10:], f[11:])) and f[-1] < 0.01  # then decays to about 0


def test_distillation_loss():
    torch.manual_seed(0)
    student = torch.randn(4, 3, requires_grad=True)
    target = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 0]), 3).float()
    ce = torch.nn.CrossEntropyLoss()
    teacher_same = torch.softmax(student.detach() / 2.0, 1)
    # alpha 0: plain cross-entropy; a teacher equal to the student adds nothing (KL = 0).
    with torch.no_grad():
        assert float(distillation_loss(student, teacher_same, target, ce, 0.0, 2.0)) == pytest.approx(float(ce(student, target)))
        assert float(distillation_loss(student, teacher_same, target, ce, 1.0, 2.0)) == pytest.approx(0.0, abs=1e-6)
    # A confident teacher pulls the student's logit of its class up.
    teacher = torch.tensor([[0.0, 0.0, 1.0]]).repeat(4, 1)
    distillation_loss(student, teacher, target, ce, 1.0, 2.0).backward()
    assert (student.grad[:, 2] < 0).all()


def test_options_are_typed_and_checked():
    assert FullParams.from_dict({"epochs": 3}).epochs == 3
    with pytest.raises(MpoxscanError, match="unknown option"):
        FullParams.from_dict({"epoch": 3})
    with pytest.raises(MpoxscanError, match="unknown device"):
        FullParams(device="tpu")


def test_layer_decay_slows_each_stage_below_the_next():
    from mpoxscan.models import create_model

    model = create_model("mobilenetv2_100", pretrained=False, num_classes=2)
    stages = backbone_stages(model)
    assert len(stages) == 19  # features.0 ... features.18: the stem, 17 inverted-residual blocks, the last 1x1 conv
    params = FullParams(lr=1e-3, backbone_lr_ratio=0.25, layer_decay=0.5)
    optim, _ = make_optimizer(model, params, epoch_steps=2)
    grouped = [id(p) for g in optim.param_groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())  # every parameter once, none left out
    lr_of = {id(p): g["initial_lr"] for g in optim.param_groups for p in g["params"]}
    stage_lr = [lr_of[id(stage[0])] for stage in stages]
    assert stage_lr[-1] == pytest.approx(2.5e-4) and stage_lr[0] == pytest.approx(2.5e-4 * 0.5 ** 18)
    assert all(a == pytest.approx(b / 2) for a, b in zip(stage_lr, stage_lr[1:]))
    assert lr_of[id(model.get_classifier().weight)] == pytest.approx(1e-3)
    plain, _ = make_optimizer(model, FullParams(), epoch_steps=2)  # off: the whole backbone at one rate
    assert {g["initial_lr"] for g in plain.param_groups} == {2.5e-4, 1e-3} and len(plain.param_groups) == 4
    lite0 = backbone_stages(create_model("efficientnet_lite0", pretrained=False, num_classes=2))
    assert len(lite0) == 18  # the stem (convolution and its batch norm), 16 blocks, the head convolution with its own


def test_the_schedule_counts_the_steps_the_loop_takes():
    """A last batch of one photo is skipped by the loop (batch norm cannot train on it): not counted either, so that
    the cosine ends at about 0 and the backbone starts learning in the epoch after the linear probe."""
    assert steps_per_epoch(97, 32) == 3 and steps_per_epoch(98, 32) == 4 and steps_per_epoch(96, 32) == 3
    assert steps_per_epoch(1, 32) == 1 and steps_per_epoch(33, 32) == 1


def test_head_only_epochs_train_the_classifier_alone_first():
    """Linear probe, then fine-tune: while frozen the backbone gets no gradient (so no optimizer state and no weight
    decay) and its batch norm does not update its statistics; the classifier learns. Unfrozen, everything learns."""
    from mpoxscan.models import create_model

    torch.manual_seed(0)
    model = create_model("mobilenetv2_100", pretrained=False, num_classes=2)
    params = FullParams(epochs=3, head_only_epochs=1, warmup_epochs=0.5, weight_decay=0.05)
    optim, sched = make_optimizer(model, params, epoch_steps=2)
    x, y = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 0, 1])
    stem, head = model.features[0][0].weight, model.get_classifier().weight
    bn = model.features[0][1]

    def step():
        optim.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optim.step()
        sched.step()

    before = stem.detach().clone(), head.detach().clone(), bn.running_mean.clone()
    model.train()
    freeze_backbone(model, True)
    for _ in range(2):  # the first epoch
        step()
    assert torch.equal(stem, before[0]) and not torch.equal(head, before[1])
    assert torch.equal(bn.running_mean, before[2]) and stem not in optim.state
    model.train()
    freeze_backbone(model, False)
    step()
    assert not torch.equal(stem, before[0]) and bn.training and stem.requires_grad
    with pytest.raises(MpoxscanError, match="head_only_epochs"):
        FullParams(epochs=2, head_only_epochs=2)
    with pytest.raises(MpoxscanError, match="layer_decay"):
        FullParams(layer_decay=0.0)
    # In training: the chosen model comes back whole, every parameter trainable again.
    images = torch.randint(0, 256, (12, 3, 32, 32), dtype=torch.uint8)
    trained, info = train_network("mobilenetv2_100", images, torch.tensor([0, 1] * 6), list(range(8)),
                                  list(range(8, 12)), 2, FullParams(**{**TINY, "batch_size": 4}, head_only_epochs=1))
    assert np.isfinite(info["best_valid_loss"]) and all(p.requires_grad for p in trained.parameters())


def test_ema_changes_the_chosen_weights():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (12, 3, 32, 32), dtype=torch.uint8)
    labels = torch.tensor([0, 1] * 6)
    runs = {}
    for decay in (0.0, 0.5):
        params = FullParams(**{**TINY, "epochs": 1, "batch_size": 4}, ema_decay=decay)
        model, info = train_network("mobilenetv2_100", images, labels, list(range(8)), list(range(8, 12)), 2, params)
        runs[decay] = model.get_classifier().weight.detach()
        assert info["input_size"] == 32 and len(info["valid_loss_history"]) == 1
    assert not torch.allclose(runs[0.0], runs[0.5])


def test_precise_bn_sets_the_statistics_of_the_training_photos():
    """With precise_bn the chosen model's batch-norm statistics are the plain mean over the training photos' plain
    views (not a lagging moving average); without it they are not."""
    from mpoxscan.training.features import preprocessing_for
    from mpoxscan.training.full import _Normalise

    torch.manual_seed(0)
    images = torch.randint(0, 256, (12, 3, 32, 32), dtype=torch.uint8)
    labels = torch.tensor([0, 1] * 6)
    train = list(range(8))
    norm = _Normalise(preprocessing_for("mobilenetv2_100", 32), torch.device("cpu"), False)
    gaps = {}
    for precise in (True, False):
        params = FullParams(**{**TINY, "epochs": 1, "batch_size": 4}, precise_bn=precise)
        model, _ = train_network("mobilenetv2_100", images, labels, train, list(range(8, 12)), 2, params)
        bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
        seen = []
        hook = bn.register_forward_hook(lambda m, inputs, out: seen.append(inputs[0].detach()))
        with torch.no_grad():
            model.eval()(norm(images[train].float() / 255.0))  # one batch: the cumulative average is the plain mean
        hook.remove()
        gaps[precise] = float((bn.running_mean - seen[0].mean((0, 2, 3))).abs().max())
    assert gaps[True] < 1e-4
    assert gaps[False] > 1e-2


def test_precise_bn_never_forms_a_one_photo_batch():
    """eval_batch + 1 training photos at 32 px (1 x 1 maps at the end): batches of 9 and 8, not 16 and 1, which batch
    norm refuses to train on."""
    torch.manual_seed(0)
    images = torch.randint(0, 256, (21, 3, 32, 32), dtype=torch.uint8)
    labels = torch.tensor([0, 1] * 10 + [0])
    params = FullParams(**{**TINY, "epochs": 1}, precise_bn=True)
    model, info = train_network("mobilenetv2_100", images, labels, list(range(17)), list(range(17, 21)), 2, params)
    assert np.isfinite(info["best_valid_loss"])
    assert all(torch.isfinite(m.running_var).all() for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


@pytest.fixture(scope="module")
def full_run(squares_manifest, tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "run"
    config = CVConfig(manifest=str(squares_manifest), models=["mobilenetv2_100"], strategy="full", protocol="kfold",
                      views=0, extra={"full": LEARNS, "bootstrap": 50})
    return config, out, run_cv(config, out, progress=False)


def test_full_cv_writes_per_image_predictions_and_pooled_statistics(full_run, squares_manifest):
    config, out, results = full_run
    model = results["models"]["mobilenetv2_100"]
    assert len(model["folds"]) == 4 and model["folds"][0]["info"]["input_size"] == 48
    assert set(model["pooled"]) == {"main", "tta"}
    pooled = model["pooled"]["main"]
    assert pooled["n_images"] == 40 and pooled["n_groups"] == 20
    lo, hi = pooled["metrics"]["accuracy"]["ci95"]
    assert pooled["metrics"]["accuracy"]["value"] >= 0.8  # it learns: two colours of squares
    assert lo <= pooled["metrics"]["accuracy"]["value"] <= hi and "ppv_at_0.01" in pooled["metrics"]
    with open(out / "oof_predictions.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 80 and {t["variant"] for t in table} == {"main", "tta"}  # 40 images x 2 variants
    main = [t for t in table if t["variant"] == "main"]
    assert len({t["image"] for t in main}) == 40  # every image once out of fold
    assert all(abs(float(t["p_Healthy"]) + float(t["p_Monkeypox"]) - 1) < 1e-4 for t in table)
    truth = {f"sq/{r.relpath}": r.label for r in kept_rows(squares_manifest)}
    assert all(truth[t["image"]] == t["label"] for t in table)


def test_full_cv_resumes_a_deleted_fold(full_run):
    config, out, _ = full_run
    preds = sorted((out / "predictions").glob("*__fold?.csv"))
    stamp = preds[0].stat().st_mtime_ns
    preds[2].unlink()
    run_cv(CVConfig(**config.__dict__), out, progress=False)
    assert preds[0].stat().st_mtime_ns == stamp and preds[2].exists()
    other = CVConfig(**{**config.__dict__, "extra": {**config.extra, "full": {**LEARNS, "input_size": 32}}})
    with pytest.raises(MpoxscanError, match=r"other settings \(full .*\"input_size\": 48.* there, .*\"input_size\": 32"):
        run_cv(other, out, progress=False)  # another input size must not mix with these folds


def test_full_cv_records_every_option_so_that_a_changed_default_cannot_slip_in(full_run):
    config, out, _ = full_run
    cfg_path = out / "config.json"
    written = cfg_path.read_text()
    recorded = json.loads(written)["extra"]["full"]
    assert recorded == json.loads(json.dumps(dataclasses.asdict(FullParams(**LEARNS))))  # defaults filled in
    again = CVConfig(**{**config.__dict__, "extra": {"full": LEARNS, "bootstrap": 50}})
    try:
        # As if the run had been made when precise BN was off by default: today's default must not resume it.
        cfg_path.write_text(json.dumps({**json.loads(written), "extra": {"full": {**recorded, "precise_bn": False}}}))
        with pytest.raises(MpoxscanError, match=r"other settings \(full .*\"precise_bn\": false"):
            run_cv(CVConfig(**again.__dict__), out, progress=False)
        # A run recorded before every option was (only the given ones) still resumes, today's defaults filled in.
        cfg_path.write_text(json.dumps({**json.loads(written), "extra": {"full": LEARNS, "bootstrap": 50}}))
        run_cv(CVConfig(**again.__dict__), out, progress=False)
        assert json.loads(cfg_path.read_text())["extra"]["full"] == recorded
    finally:
        cfg_path.write_text(written)


def test_distill_scores_teachers_and_student_on_the_same_fold(squares_manifest, tmp_path):
    config = CVConfig(manifest=str(squares_manifest), models=["efficientnet_lite0"], strategy="distill",
                      protocol="kfold", views=0, only_folds=["fold1"],
                      extra={"full": TINY, "distill": {"teachers": ["mobilenetv2_100@32"]}, "bootstrap": 20})
    results = run_cv(config, tmp_path / "run", progress=False)
    model = results["models"]["efficientnet_lite0"]
    assert {"main", "tta", "teacher", "teacher-tta", "teacher1"} <= set(model["pooled"])
    assert model["folds"][0]["info"]["teachers"][0]["timing"]["device"] == "cpu"  # cv keeps the cost of each
    info = model["folds"][0]["info"]
    assert info["teachers"][0]["teacher"] == "mobilenetv2_100@32"
    split = make_splits(kept_rows(squares_manifest), "kfold", 0)[0]
    for variant in ("main", "teacher"):
        assert model["pooled"][variant]["n_images"] == len(split.test)


def test_distill_refuses_unknown_teachers(squares_manifest, tmp_path):
    config = CVConfig(manifest=str(squares_manifest), models=["efficientnet_lite0"], strategy="distill",
                      protocol="kfold", views=0, extra={"full": TINY, "distill": {"teachers": ["resnet50@224"]}})
    with pytest.raises(MpoxscanError, match="unknown model"):
        run_cv(config, tmp_path / "run", progress=False)


def test_train_full_at_another_input_size_exports_it(squares_manifest, tmp_path):
    from mpoxscan.deploy.export import to_onnx_fp32
    from mpoxscan.deploy.runtime import Screener
    from mpoxscan.training.train import load_checkpoint, train

    card = train(squares_manifest, "mobilenetv2_100", "full", tmp_path / "m", options={"full": {**TINY, "input_size": 40}})
    assert card["preprocessing"]["input_size"] == 40 and card["strategy"] == "full"
    assert "timing" not in card["training"] and card["training"]["input_size"] == 40
    model, card = load_checkpoint(tmp_path / "m")
    (tmp_path / "m.onnx").write_bytes(to_onnx_fp32(model, card).SerializeToString())
    screener = Screener(tmp_path / "m.onnx")
    assert screener.input_size == 40
    from conftest import square_photo

    probabilities = screener.predict_proba([square_photo((200, 40, 40), 7)])
    assert probabilities.shape == (1, 2) and abs(float(probabilities.sum()) - 1) < 1e-4
    assert json.loads((tmp_path / "m" / "card.json").read_text())["preprocessing"]["input_size"] == 40


def test_cli_cv_full_and_its_option_checks(squares_manifest, tmp_path):
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "mpoxscan.cli", "cv", "--manifest", str(squares_manifest), "--models", "mobilenetv2_100"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd + ["--strategy", "full", "--device", "cpu", "--input-size", "32", "--epochs", "1",
                                 "--batch-size", "8", "--folds", "fold1", "--out", str(tmp_path / "run"), "--quiet"],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "pooled out-of-fold accuracy" in proc.stdout and "patient-level bootstrap" in proc.stdout
    info = json.loads((tmp_path / "run" / "predictions" / "mobilenetv2_100__full__fold1.json").read_text())
    assert info["input_size"] == 32 and info["epochs"] == 1 and info["timing"]["device"] == "cpu"
    proc = subprocess.run(cmd + ["--strategy", "full", "--device", "cpu", "--input-size", "32", "--epochs", "2",
                                 "--layer-decay", "0.8", "--head-only-epochs", "1", "--batch-size", "8", "--folds",
                                 "fold1", "--out", str(tmp_path / "lpft"), "--quiet"],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr
    recipe = json.loads((tmp_path / "lpft" / "config.json").read_text())["extra"]["full"]
    assert recipe["layer_decay"] == 0.8 and recipe["head_only_epochs"] == 1
    bad = subprocess.run(cmd + ["--strategy", "full", "--epochs", "2", "--head-only-epochs", "2", "--out",
                                str(tmp_path / "x")], capture_output=True, text=True, env=env)
    assert bad.returncode == 1 and "head_only_epochs must be" in bad.stderr and "Traceback" not in bad.stderr
    bad = subprocess.run(cmd + ["--strategy", "linear", "--input-size", "32", "--out", str(tmp_path / "x")],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 1 and ("--input-size: options of the full and distill strategies (--input-size also of "
                                    "finetune), not of linear") in bad.stderr
    bad = subprocess.run(cmd + ["--strategy", "distill", "--teachers", "resnet@224", "--out", str(tmp_path / "x")],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 1 and "unknown model" in bad.stderr and "Traceback" not in bad.stderr


def test_train_distill_card_has_no_timing(squares_manifest, tmp_path):
    from mpoxscan.training.train import train

    card = train(squares_manifest, "mobilenetv2_100", "distill", tmp_path / "d",
                 options={"full": TINY, "distill": {"teachers": ["mobilenetv2_100@32"]}})
    assert card["strategy"] == "distill" and card["training"]["teachers"][0]["teacher"] == "mobilenetv2_100@32"
    assert "timing" not in json.dumps(card["training"])  # the exported file must depend on the weights alone
