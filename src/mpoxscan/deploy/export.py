"""`mpoxscan export`: a checkpoint -> self-describing ONNX files (fp32, fp16, int8), each checked against fp32.

fp16 and int8 are written only when they pass the fidelity gate on held-out images: the inner-validation patients
of the checkpoint's own training split (recomputed from the calibration manifest and the card's seed), which the
network's weights never saw. int8 is calibrated on training images, and its settings are chosen by agreement with
fp32 on other training images, so the gate images play no part in any choice.
"""

from __future__ import annotations

import io
import json
import time
import warnings
from pathlib import Path

import numpy as np

from mpoxscan.deploy.fidelity import Gate, compare
from mpoxscan.deploy.quantize import INT8_CANDIDATES, save, to_fp16, to_int8
from mpoxscan.deploy.runtime import Screener, write_metadata
from mpoxscan.errors import MpoxscanError

PRECISIONS = ("fp32", "fp16", "int8")
FORMATS = ("onnx",)
OPSET = 17


def onnx_bytes(module, input_size: int, output_names: list[str]) -> bytes:
    """One self-contained ONNX file (batch size dynamic) of a module taking images (N, 3, S, S) named ``image``.

    The TorchScript-based exporter (``dynamo=False``) is used: with torch 2.13 it writes a single file with no
    extra dependency, and its graphs quantize cleanly with ONNX Runtime."""
    import torch

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer notes
        torch.onnx.export(module, torch.zeros(1, 3, input_size, input_size), buf, input_names=["image"],
                          output_names=output_names, dynamic_axes={n: {0: "n"} for n in ["image", *output_names]},
                          opset_version=OPSET, dynamo=False)
    return buf.getvalue()


def _deployable(model, temperature: float):
    """The network plus its calibrated softmax, so that a phone needs no arithmetic besides the model."""
    import torch

    class Deployable(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = model

        def forward(self, image):
            logits = self.backbone(image)
            return logits, torch.softmax(logits / temperature, dim=1)

    return Deployable().eval()


def metadata(card: dict, precision: str, extra: dict | None = None) -> dict:
    """What a model file carries: enough to preprocess, screen and explain what it is."""
    return {"format": 1, "precision": precision, "architecture": card["architecture"], "strategy": card["strategy"],
            "classes": card["classes"], "positive_class": card["positive_class"],
            "preprocessing": card["preprocessing"], "temperature": card["temperature"],
            "screening_threshold": card["screening_threshold"], "parameters": card.get("parameters"),
            "card": {k: card[k] for k in ("data", "git_commit", "created", "training", "model_card") if k in card},
            **(extra or {})}


def to_onnx_fp32(model, card: dict):
    import onnx

    proto = onnx.load_model_from_string(onnx_bytes(_deployable(model, card["temperature"]),
                                                   card["preprocessing"]["input_size"], ["logits", "probabilities"]))
    write_metadata(proto, metadata(card, "fp32"))
    return proto


def _image_sets(manifest: Path, card: dict, n_calibration: int, n_selection: int, seed: int) -> dict:
    """Preprocessed calibration, selection and held-out (gate) images from the checkpoint's training manifest."""
    from tqdm import tqdm

    from mpoxscan.images import load_image
    from mpoxscan.preprocess import Preprocessing
    from mpoxscan.training.cv import kept_rows, manifest_digest
    from mpoxscan.training.train import inner_split

    rows = kept_rows(manifest)
    same = manifest_digest(manifest) == card.get("data", {}).get("manifest_sha256")
    split = inner_split(rows, card.get("training", {}).get("seed", 0))
    order = np.random.default_rng(seed).permutation(split.train).tolist()
    picks = {"calibration": order[:n_calibration], "selection": order[n_calibration:n_calibration + n_selection],
             "held_out": split.valid}
    p = card["preprocessing"]
    prep = Preprocessing(p["input_size"], tuple(p["mean"]), tuple(p["std"]), p["interpolation"], p["crop_pct"])
    classes = card["classes"]
    out = {"same_manifest": same}
    total = sum(len(v) for v in picks.values())
    with tqdm(total=total, desc="images", unit="img") as bar:
        for name, idx in picks.items():
            arrays = []
            for k in idx:
                arrays.append(prep(load_image(rows[k].path, min_side=prep.input_size)))
                bar.update()
            out[name] = np.stack(arrays) if arrays else np.zeros((0, 3, prep.input_size, prep.input_size), np.float32)
            out[f"{name}_labels"] = np.array([classes.index(rows[k].label) if rows[k].label in classes else -1 for k in idx])
    return out


def probabilities(model, images: np.ndarray, batch: int = 32) -> np.ndarray:
    """Calibrated probabilities of a model (an ``onnx.ModelProto`` or a :class:`Screener`) for preprocessed images."""
    screener = model if isinstance(model, Screener) else Screener(model.SerializeToString())
    parts = [screener.run(images[i:i + batch])["probabilities"] for i in range(0, len(images), batch)]
    return np.concatenate(parts) if parts else np.zeros((0, len(screener.classes)), np.float32)


def export(checkpoint: Path, out: Path, precisions: list[str], calibration: Path | None, gate: Gate = Gate(),
           int8_settings: str = "auto", n_calibration: int = 64, n_selection: int = 400, seed: int = 0,
           force: bool = False, log=print) -> dict:
    """Write ``model.<precision>.onnx`` for each precision that passes the gate, plus ``export.json`` and
    ``card.json``; raise a clear error naming every variant that failed."""
    from mpoxscan.training.train import load_checkpoint

    unknown = set(precisions) - set(PRECISIONS)
    if unknown:
        raise MpoxscanError(f"unknown precision(s) {', '.join(sorted(unknown))} (known: {', '.join(PRECISIONS)})")
    if int8_settings != "auto" and int8_settings not in INT8_CANDIDATES:
        raise MpoxscanError(f"unknown int8 settings '{int8_settings}' (known: auto, {', '.join(INT8_CANDIDATES)})")
    out = Path(out)
    if out.exists() and any(out.glob("model.*.onnx")) and not force:
        raise MpoxscanError(f"{out} already holds exported models: choose another --out or add --force")
    needs_images = any(p != "fp32" for p in precisions)
    if needs_images and calibration is None:
        raise MpoxscanError("fp16 and int8 need --calibration MANIFEST (the training manifest): they are checked "
                            "against fp32 on its held-out images, and int8 is calibrated on its training images")
    model, card = load_checkpoint(checkpoint)
    card.setdefault("parameters", int(sum(p.numel() for p in model.parameters())))
    started = time.perf_counter()
    fp32 = to_onnx_fp32(model, card)
    variants = {"fp32": fp32}
    report: dict = {"checkpoint": str(Path(checkpoint).resolve()), "gate": gate.__dict__, "variants": {}}
    failures = []
    if needs_images:
        sets = _image_sets(Path(calibration), card, n_calibration, n_selection, seed)
        if not sets["same_manifest"]:
            log("note: the calibration manifest is not the one the checkpoint was trained on: its 'held-out' images "
                "may include training images")
        report["images"] = {"calibration": len(sets["calibration"]), "selection": len(sets["selection"]),
                            "held_out": len(sets["held_out"]), "held_out_is_unseen": sets["same_manifest"]}
        ref_gate = probabilities(fp32, sets["held_out"])
        if "fp16" in precisions:
            variants["fp16"] = to_fp16(fp32)
        if "int8" in precisions:
            ref_sel = probabilities(fp32, sets["selection"])
            names = list(INT8_CANDIDATES) if int8_settings == "auto" else [int8_settings]
            trials = {}
            for name in names:
                proto = to_int8(fp32, sets["calibration"], INT8_CANDIDATES[name])
                trials[name] = (compare(ref_sel, probabilities(proto, sets["selection"])), proto)
                log(f"int8 {name}: agreement with fp32 on {len(sets['selection'])} training images "
                    f"{100 * trials[name][0]['agreement']:.1f} %")
            best = max(trials, key=lambda n: (trials[n][0]["agreement"], -trials[n][0]["mean_probability_difference"]))
            variants["int8"] = trials[best][1]
            report["int8_selection"] = {"chosen": best, "settings": INT8_CANDIDATES[best].describe(),
                                        "trials": {n: r for n, (r, _) in trials.items()}}
    out.mkdir(parents=True, exist_ok=True)
    for precision in [p for p in PRECISIONS if p in precisions or p == "fp32"]:
        proto = variants[precision]
        extra = {"int8_settings": report["int8_selection"]["settings"]} if precision == "int8" else None
        write_metadata(proto, metadata(card, precision, extra))
        entry: dict = {}
        if precision != "fp32":
            entry = compare(ref_gate, probabilities(proto, sets["held_out"]), sets["held_out_labels"])
            entry["failures"] = gate.failures(entry)
            failures += [f"{precision}: {r}" for r in entry["failures"]]
        path = out / f"model.{precision}.onnx"
        if entry.get("failures") or precision not in precisions:
            path.unlink(missing_ok=True)
        else:
            save(proto, path)
            entry |= {"file": path.name, "bytes": path.stat().st_size}
        report["variants"][precision] = entry
    report["seconds"] = round(time.perf_counter() - started, 1)
    (out / "export.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    if failures:
        raise MpoxscanError("fidelity gate failed, variant not written: " + "; ".join(failures) + f" (details: {out / 'export.json'})")
    return report
