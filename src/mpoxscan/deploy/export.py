"""`mpoxscan export`: a checkpoint -> self-describing ONNX files (fp32, fp16, int8), each checked against fp32.

fp16 and int8 are written only when they pass the fidelity gate on held-out images: the inner-validation patients
of the checkpoint's own training split (recomputed from the calibration manifest and the card's seed), which the
network's weights never saw. int8 is calibrated on training images, and its settings are chosen by closeness to
fp32 on other training images, so the gate images play no part in any choice.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from mpoxscan.deploy.fidelity import Gate, compare
from mpoxscan.deploy.quantize import INT8_CANDIDATES, save, to_fp16, to_int8
from mpoxscan.deploy.runtime import Screener, write_metadata
from mpoxscan.errors import MpoxscanError
from mpoxscan.models.onnx import onnx_bytes

PRECISIONS = ("fp32", "fp16", "int8")
FORMATS = ("onnx", "tflite")  # tflite: fp32 only, and only where the `tflite` extra is installed


def output_names(cam: bool = True, offtask: bool = False, quality: bool = True) -> list[str]:
    """The outputs of an exported file, in order."""
    return (["logits", "probabilities"] + (["cam"] if cam else []) + (["quality"] if quality else [])
            + (["offtask"] if offtask else []))


def _deployable(model, temperature: float, preprocessing: dict, cam_output: bool = True, offtask=None,
                quality: bool = True):
    """The network plus its calibrated softmax, the class activation map of its answer, and the measurements behind
    "cannot tell" (``quality`` always; ``offtask`` when a fitted :class:`~mpoxscan.deploy.checks.OfftaskFit` is given),
    so that a phone needs no arithmetic besides the model, and can show where the network looked.

    With global average pooling and a linear classifier, Grad-CAM of class k equals ReLU(sum_c w[k, c] F_c) / (h w)
    (the gradient of the score with respect to F_c is w[k, c] / (h w) at every position): one small product with
    the last feature map, normalised here to a peak of 1."""
    import torch

    from mpoxscan.deploy.checks import OfftaskScore, QualityMeasures

    class Deployable(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = model
            self.quality = QualityMeasures(tuple(preprocessing["mean"]), tuple(preprocessing["std"])) if quality else None
            self.offtask = OfftaskScore(offtask) if offtask is not None else None

        def forward(self, image):
            if self.offtask is not None:
                h = self.backbone.forward_until(image, self.offtask.block)
                features = self.backbone.forward_from(h, self.offtask.block)
            else:
                features = self.backbone.forward_features(image)
            logits = self.backbone.forward_head(self.backbone.pool(features))
            outputs = [logits, torch.softmax(logits / temperature, dim=1)]
            if cam_output:
                weights = self.backbone.get_classifier().weight[logits.argmax(1)]
                cam = torch.relu(torch.einsum("nc,nchw->nhw", weights, features))
                outputs.append(cam / (cam.flatten(1).max(1).values.view(-1, 1, 1) + 1e-12))
            if self.quality is not None:
                outputs.append(self.quality(image))
            if self.offtask is not None:
                outputs.append(self.offtask(h))
            return tuple(outputs)

    return Deployable().eval()


def offtask_block(model, card: dict) -> int:
    """The block whose incoming activation feeds the off-task score: the deepest one that fine-tuning leaves at its
    ImageNet weights (chosen by measurement: benchmarks/results/offtask/)."""
    trained = card.get("training", {}).get("train_blocks") or 5
    return max(1, model.num_blocks - int(trained))


def fit_offtask_on(model, card: dict, images: np.ndarray, batch: int = 32):
    """Fit the off-task subspace on training photos (preprocessed, plain view)."""
    import torch

    from mpoxscan.deploy.checks import fit_offtask, pooled_moments

    block = offtask_block(model, card)
    parts = []
    with torch.inference_mode():
        for k in range(0, len(images), batch):
            parts.append(pooled_moments(model.forward_until(torch.from_numpy(images[k:k + batch]), block)).numpy())
    return fit_offtask(np.concatenate(parts), block)


def metadata(card: dict, precision: str, extra: dict | None = None) -> dict:
    """What a model file carries: enough to preprocess, screen and explain what it is."""
    return {"format": 1, "precision": precision, "architecture": card["architecture"], "strategy": card["strategy"],
            "classes": card["classes"], "positive_class": card["positive_class"],
            "preprocessing": card["preprocessing"], "temperature": card["temperature"],
            "screening_threshold": card["screening_threshold"], "parameters": card.get("parameters"),
            # Only what the weights depend on: no time, path or commit, so that the same checkpoint always exports
            # to the same bytes (the bundled model is reproducible); those stay in the checkpoint's card.json.
            "card": {"data": {k: v for k, v in card.get("data", {}).items() if k != "manifest"},
                     "training": {k: v for k, v in card.get("training", {}).items() if k != "seconds"}},
            **(extra or {})}


def to_onnx_fp32(model, card: dict, cam: bool = True, offtask=None):
    """The deployable fp32 graph: ``image`` -> ``logits``, ``probabilities``, ``cam`` (unless ``cam=False``),
    ``quality`` and, with a fitted off-task subspace, ``offtask``."""
    import onnx

    outputs = output_names(cam, offtask is not None)
    module = _deployable(model, card["temperature"], card["preprocessing"], cam, offtask)
    proto = onnx.load_model_from_string(onnx_bytes(module, card["preprocessing"]["input_size"], outputs))
    write_metadata(proto, metadata(card, "fp32", _offtask_meta(offtask)))
    return proto


def _offtask_meta(offtask) -> dict | None:
    return {"offtask": offtask.describe()} if offtask is not None else None


def outputs_of(model, images: np.ndarray, batch: int = 32) -> dict[str, np.ndarray]:
    """Every output of a model (an ``onnx.ModelProto`` or a :class:`Screener`) for preprocessed images."""
    screener = model if isinstance(model, Screener) else Screener(model.SerializeToString())
    parts = [screener.run(images[i:i + batch]) for i in range(0, len(images), batch)]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]} if parts else {}


def with_answer_rule(proto, reference: dict[str, np.ndarray], held_out: dict[str, np.ndarray],
                     blockiness: np.ndarray | None = None) -> dict:
    """Set the "cannot tell" thresholds of an exported variant from its own outputs (the file that is measured is
    the file that ships): quality limits from the ``reference`` photos' outputs (and the compression limit from
    their ``blockiness``, measured on the photos themselves), the off-task limit from the outputs of ``held_out``
    photos that the off-task subspace was not fitted on. Returns the rule (also written into the file's metadata)."""
    from mpoxscan.deploy.answer import AnswerRule, fit_rule
    from mpoxscan.deploy.runtime import read_metadata

    meta = read_metadata(proto)
    rule = fit_rule(AnswerRule.from_meta(meta), reference.get("quality"), held_out.get("offtask"), blockiness)
    meta["answer_rule"] = rule.as_dict()
    write_metadata(proto, meta)
    return meta["answer_rule"]


def preprocessed(rows, indices, card: dict, blockiness: bool = False):
    """The card's preprocessing of ``rows[k]`` for each k (plain view), as one array (N, 3, S, S); with
    ``blockiness`` also each photo's blockiness as screening measures it, from the same decode (NaN where screening
    does not measure it: a JPEG decoded at reduced scale, deploy/compression.py)."""
    from tqdm import tqdm

    from mpoxscan.images import load_image
    from mpoxscan.preprocess import Preprocessing

    prep = Preprocessing.from_dict(card["preprocessing"])
    arrays, measures = [], []
    for k in tqdm(indices, desc="images", unit="img", leave=False, disable=len(indices) < 50):
        photo = load_image(rows[k].path, min_side=prep.input_size)
        arrays.append(prep(photo))
        if blockiness:
            measures.append(_screening_blockiness(photo, prep.input_size))
    x = np.stack(arrays) if arrays else np.zeros((0, 3, prep.input_size, prep.input_size), np.float32)
    return (x, np.array(measures, float)) if blockiness else x


def _screening_blockiness(photo, input_size: int) -> float:
    from mpoxscan.deploy.compression import photo_blockiness

    value = photo_blockiness(photo, input_size)
    return np.nan if value is None else value


def checkpoint_split(manifest: Path, card: dict):
    """(rows, split, unseen): the manifest's kept rows and the checkpoint's own training split of them (its
    ``train`` and inner-validation ``valid`` indices; unseen is False when the manifest is not the training
    manifest, so that ``valid`` may hold photos the checkpoint trained on)."""
    from mpoxscan.data.manifest import kept_rows, same_training_data
    from mpoxscan.data.splits import training_split

    rows = kept_rows(Path(manifest))
    unseen = same_training_data(Path(manifest), card.get("data", {}))
    return rows, training_split(rows, card.get("training", {})), unseen


def calibration_split(train: list[int], n_calibration: int, n_selection: int, seed: int) -> tuple[list[int], list[int]]:
    """Training images that calibrate int8, and other training images that choose its settings."""
    order = np.random.default_rng(seed).permutation(train).tolist()
    calibration, selection = order[:n_calibration], order[n_calibration:n_calibration + n_selection]
    return calibration, selection or calibration  # a tiny training set: choose on the calibration images


def probabilities(model, images: np.ndarray, batch: int = 32) -> np.ndarray:
    """Calibrated probabilities of a model (an ``onnx.ModelProto`` or a :class:`Screener`) for preprocessed images."""
    screener = model if isinstance(model, Screener) else Screener(model.SerializeToString())
    got = outputs_of(screener, images, batch)
    return got["probabilities"] if got else np.zeros((0, len(screener.classes)), np.float32)


def build_variants(fp32, card: dict, precisions: list[str], calibration: np.ndarray, selection: np.ndarray,
                   int8_settings: str = "auto", log=print) -> tuple[dict, dict]:
    """{precision: onnx.ModelProto} for fp32 and the requested fp16 / int8, each with its metadata, and the record
    of how the int8 settings were chosen (the smallest mean |dp| against fp32 on the selection images)."""
    from mpoxscan.deploy.runtime import read_metadata

    variants, selection_report = {"fp32": fp32}, {}
    base = read_metadata(fp32)  # the fp32 file's metadata (off-task description included), per precision below
    if "fp16" in precisions:
        variants["fp16"] = to_fp16(fp32)
    if "int8" in precisions:
        ref = probabilities(fp32, selection)
        names = list(INT8_CANDIDATES) if int8_settings == "auto" else [int8_settings]
        trials = {}
        for name in names:
            proto = to_int8(fp32, calibration, INT8_CANDIDATES[name])
            trials[name] = (compare(ref, probabilities(proto, selection)), proto)
            log(f"int8 {name}: agreement with fp32 on {len(selection)} training images "
                f"{100 * trials[name][0]['agreement']:.1f} %, mean |dp| {trials[name][0]['mean_probability_difference']:.4f}")
        # The mean probability difference, not the count of flipped answers: on a few hundred training images (far
        # from the decision boundary) flips are rare and one flip decides; the mean difference measures every image.
        best = min(trials, key=lambda n: trials[n][0]["mean_probability_difference"])
        variants["int8"] = trials[best][1]
        selection_report = {"chosen": best, "settings": INT8_CANDIDATES[best].describe(),
                            "trials": {n: r for n, (r, _) in trials.items()}}
    for precision, proto in variants.items():
        write_metadata(proto, {**base, "precision": precision,
                               **({"int8_settings": selection_report["settings"]} if precision == "int8" else {})})
    return variants, selection_report


def export(checkpoint: Path, out: Path, precisions: list[str], calibration: Path | None, gate: Gate = Gate(),
           int8_settings: str = "auto", n_calibration: int = 64, n_selection: int = 400, seed: int = 0,
           force: bool = False, log=print, formats: tuple[str, ...] = ("onnx",),
           screening_threshold: float | None = None) -> dict:
    """Write ``model.<precision>.onnx`` for each precision that passes the gate, plus ``export.json`` and
    ``card.json``; raise a clear error naming every variant that failed. ``screening_threshold``: the files'
    threshold instead of the checkpoint's (the bundle ships the operating point of the recipe's out-of-fold
    predictions, not the one its 20 % held-out split chose)."""
    from mpoxscan.models.checkpoint import load_checkpoint

    unknown = set(precisions) - set(PRECISIONS)
    if unknown:
        raise MpoxscanError(f"unknown precision(s) {', '.join(sorted(unknown))} (known: {', '.join(PRECISIONS)})")
    if int8_settings != "auto" and int8_settings not in INT8_CANDIDATES:
        raise MpoxscanError(f"unknown int8 settings '{int8_settings}' (known: auto, {', '.join(INT8_CANDIDATES)})")
    out = Path(out)
    if out.exists() and any(out.glob("model.*.onnx")) and not force:
        raise MpoxscanError(f"{out} already holds exported models: choose another --out or add --force")
    if "tflite" in formats:
        from mpoxscan.deploy.tflite import HINT, available

        if not available():
            raise MpoxscanError(HINT)
    needs_images = any(p != "fp32" for p in precisions) or "tflite" in formats
    if needs_images and calibration is None:
        raise MpoxscanError("fp16 and int8 need --calibration MANIFEST (the training manifest): they are checked "
                            "against fp32 on its held-out images, and int8 is calibrated on its training images")
    model, card = load_checkpoint(checkpoint)
    card.setdefault("parameters", int(sum(p.numel() for p in model.parameters())))
    if screening_threshold is not None:
        card["checkpoint_screening_threshold"] = card["screening_threshold"]
        card["screening_threshold"] = float(screening_threshold)
    started = time.perf_counter()
    report: dict = {"checkpoint": str(Path(checkpoint).resolve()), "gate": gate.__dict__, "variants": {}}
    failures: list[str] = []
    if calibration is None:
        log("note: without --calibration the file cannot say 'cannot tell' (no off-task subspace, no quality limits)")
        variants = {"fp32": to_onnx_fp32(model, card)}
    else:
        rows, split, unseen = checkpoint_split(Path(calibration), card)
        if not unseen:
            log("note: the calibration manifest is not the one the checkpoint was trained on: its 'held-out' images "
                "may include training images")
        cal_idx, sel_idx = calibration_split(split.train, n_calibration, n_selection, seed)
        train_images, train_blockiness = preprocessed(rows, split.train, card, blockiness=True)
        at = {k: i for i, k in enumerate(split.train)}
        held_out, held_blockiness = preprocessed(rows, split.valid, card, blockiness=True)
        labels = np.array([card["classes"].index(rows[k].label) if rows[k].label in card["classes"] else -1
                           for k in split.valid])
        report["images"] = {"calibration": len(cal_idx), "selection": len(sel_idx), "held_out": len(split.valid),
                            "held_out_is_unseen": unseen, "offtask_fit": len(split.train)}
        fp32 = to_onnx_fp32(model, card, offtask=fit_offtask_on(model, card, train_images))
        variants, report["int8_selection"] = build_variants(fp32, card, precisions, train_images[[at[k] for k in cal_idx]],
                                                            train_images[[at[k] for k in sel_idx]], int8_settings, log)
        # Each variant runs once over every photo of the manifest, the held-out ones last: quality limits from all
        # of them (the measures do not depend on training), the off-task limit and the gate from the held-out ones
        # (the subspace was fitted on the training ones).
        photos, n = np.concatenate([train_images, held_out]), len(held_out)
        del train_images
        # Measured as screening measures it (a large JPEG, decoded at reduced scale, is not): the limit is fitted
        # on the same quantity that it is applied to.
        native = np.concatenate([train_blockiness, held_blockiness])
        held_outputs, report["answer_rule"] = {}, {}
        for p, v in variants.items():
            every = outputs_of(v, photos)
            held_outputs[p] = {name: values[len(values) - n:] for name, values in every.items()}
            report["answer_rule"][p] = with_answer_rule(v, every, held_outputs[p], native)
        if report["answer_rule"]["fp32"].get("max_blockiness") is None:
            from mpoxscan.deploy.answer import ALPHA

            log(f"note: only {int(np.sum(~np.isnan(native)))} of {len(native)} photos could be measured for "
                f"compression as screening measures them (large JPEGs are not): too few for a limit at "
                f"{ALPHA['blockiness']:.1%}, so the file has no 'too compressed' check")
        ref_gate = held_outputs["fp32"]["probabilities"]
        del photos
    out.mkdir(parents=True, exist_ok=True)
    for precision in [p for p in PRECISIONS if p in precisions or p == "fp32"]:
        proto = variants[precision]
        entry: dict = {}
        if precision != "fp32":
            entry = compare(ref_gate, held_outputs[precision]["probabilities"], labels)
            entry["failures"] = gate.failures(entry)
            failures += [f"{precision}: {r}" for r in entry["failures"]]
        path = out / f"model.{precision}.onnx"
        if entry.get("failures") or precision not in precisions:
            path.unlink(missing_ok=True)
        else:
            save(proto, path)
            entry |= {"file": path.name, "bytes": path.stat().st_size}
        report["variants"][precision] = entry
    if "tflite" in formats:
        from mpoxscan.deploy.tflite import TFLiteRunner, to_tflite

        # Without the measurement outputs (the TFLite file is for Android apps, which bring their own checks), so its
        # metadata carries no answer rule.
        path = to_tflite(_deployable(model, card["temperature"], card["preprocessing"], quality=False),
                         card["preprocessing"]["input_size"], out / "model.fp32.tflite",
                         metadata(card, "fp32", {"format": "tflite"}))
        got = TFLiteRunner(path, output_names(quality=False)).run(held_out)["probabilities"]
        entry = compare(ref_gate, got, labels)
        entry["failures"] = gate.failures(entry)
        failures += [f"tflite fp32: {r}" for r in entry["failures"]]
        if entry["failures"]:
            path.unlink()
        else:
            entry |= {"file": path.name, "bytes": path.stat().st_size}
        report["variants"]["tflite-fp32"] = entry
    report["seconds"] = round(time.perf_counter() - started, 1)
    (out / "export.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    if failures:
        raise MpoxscanError("fidelity gate failed, variant not written: " + "; ".join(failures) + f" (details: {out / 'export.json'})")
    return report


def fold_answers(model, card: dict, rows, split) -> tuple[list, dict]:
    """For cross-validation (issue 26: the rule that ships, per fold): the fold's network exported at fp32 with its
    whole answer rule fitted as :func:`export` fits it, on the fold's own photos only (the off-task subspace on
    ``split.train``, the quality and compression limits on train + valid, the off-task limit on ``split.valid``), and
    its answer for each photo of ``split.test``, screened as `predict` screens (the photo decoded whole)."""
    from tqdm import tqdm

    from mpoxscan.images import load_image

    train_images, train_blockiness = preprocessed(rows, split.train, card, blockiness=True)
    held_out, held_blockiness = preprocessed(rows, split.valid, card, blockiness=True)
    fp32 = to_onnx_fp32(model, card, offtask=fit_offtask_on(model, card, train_images))
    every = outputs_of(fp32, np.concatenate([train_images, held_out]))
    del train_images
    n = len(held_out)
    rule = with_answer_rule(fp32, every, {name: values[len(values) - n:] for name, values in every.items()},
                            np.concatenate([train_blockiness, held_blockiness]))
    screener = Screener(fp32.SerializeToString())
    answers = []
    for start in tqdm(range(0, len(split.test), 32), desc="answers", unit="batch", leave=False,
                      disable=len(split.test) < 100):
        # Decoded as `mpoxscan predict` and the service decode (a large JPEG at a reduced scale): the answers are
        # the shipped rule's, and the decode is several times faster.
        answers += screener.screen_batch([load_image(rows[k].path, min_side=screener.input_size)
                                          for k in split.test[start:start + 32]])
    return answers, rule


def split_variant_probabilities(model, card: dict, rows, split, precisions: list[str], n_calibration: int = 64,
                                n_selection: int = 400, seed: int = 0,
                                int8_settings: str = "auto") -> tuple[dict[str, np.ndarray], dict]:
    """For cross-validation: export a fold's model, quantize it with that fold's training images only, and return
    each variant's probabilities on the fold's test images (plain view), with how int8 was chosen."""
    fp32 = to_onnx_fp32(model, card)
    cal_idx, sel_idx = calibration_split(split.train, n_calibration, n_selection, seed)
    variants, chosen = build_variants(fp32, card, precisions, preprocessed(rows, cal_idx, card),
                                      preprocessed(rows, sel_idx, card), int8_settings, log=lambda m: None)
    test = preprocessed(rows, split.test, card)
    return {p: probabilities(v, test) for p, v in variants.items()}, {"int8_selection": chosen, "fp32": fp32,
                                                                      "bytes": {p: len(v.SerializeToString()) for p, v in variants.items()}}
