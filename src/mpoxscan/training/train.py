"""`mpoxscan train`: one final model on all training images, saved as a self-describing checkpoint."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
from pathlib import Path

import numpy as np

from mpoxscan.errors import MpoxscanError
from mpoxscan.evaluation.metrics import POSITIVE, classification_metrics, screening_threshold, tone_metrics
from mpoxscan.training.calibration import fit_temperature, softmax
from mpoxscan.training.cv import STRATEGIES, CVConfig, FoldSplit, kept_rows, manifest_digest
from mpoxscan.training.features import task_preprocessing

CHECKPOINT = "model.pt"
CARD = "card.json"


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def inner_split(rows, seed: int) -> FoldSplit:
    """All kept images: 80 % to fit, 20 % (whole patient groups, stratified) for early stopping and calibration."""
    from sklearn.model_selection import StratifiedGroupKFold

    idx = np.arange(len(rows))
    fit, valid = next(StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=seed)
                      .split(idx, [r.label for r in rows], [r.group for r in rows]))
    return FoldSplit("final", fit.tolist(), valid.tolist(), valid.tolist())


def train(manifest: Path, model_name: str, strategy: str, out: Path, views: int = 4, seed: int = 0,
          cache: Path | None = None, force: bool = False, finetune: dict | None = None) -> dict:
    import torch

    from mpoxscan.models import create_model

    out = Path(out)
    if (out / CHECKPOINT).exists() and not force:
        raise MpoxscanError(f"{out / CHECKPOINT} exists: choose another --out or add --force")
    if strategy not in STRATEGIES:
        raise MpoxscanError(f"unknown strategy '{strategy}' (known: {', '.join(STRATEGIES)})")
    rows = kept_rows(manifest)
    classes = sorted({r.label for r in rows})
    config = CVConfig(manifest=str(manifest), models=[model_name], strategy=strategy, protocol="final", views=views,
                      seed=seed, extra={**({"cache": str(cache)} if cache else {}), **({"finetune": finetune} if finetune else {})})
    split = inner_split(rows, seed)
    started = time.perf_counter()
    if strategy == "linear":
        from mpoxscan.training.linear import fit_on_split, probe_into_model

        probe, _ = fit_on_split(model_name, rows, split, classes, config, progress=True)
        model = probe_into_model(create_model(model_name, pretrained=True), probe)
        info = {"C": probe.C_}
    else:
        from mpoxscan.training.finetune import finetune_fold

        model, info = finetune_fold(model_name, rows, split, classes, config, progress=True, return_model=True)
    model.eval()
    prep = task_preprocessing(model_name)
    logits_valid = _logits(model, [rows[k].path for k in split.valid], prep)
    y_valid = np.array([classes.index(rows[k].label) for k in split.valid])
    temperature = fit_temperature(logits_valid, y_valid)
    p_valid = softmax(logits_valid, temperature)
    threshold = (screening_threshold(y_valid == classes.index(POSITIVE), p_valid[:, classes.index(POSITIVE)])
                 if POSITIVE in classes else 0.5)
    card = {
        "architecture": model_name, "strategy": strategy, "classes": classes, "positive_class": POSITIVE,
        "preprocessing": dataclasses.asdict(prep), "temperature": temperature, "screening_threshold": threshold,
        "training": {**info, "views": views, "seed": seed, "images_fit": len(split.train), "images_valid": len(split.valid),
                     "seconds": round(time.perf_counter() - started, 1)},
        "data": {"manifest": str(Path(manifest).resolve()), "manifest_sha256": manifest_digest(manifest), "images": len(rows)},
        "git_commit": _git_commit(),
        "validation_metrics": classification_metrics([rows[k].label for k in split.valid], p_valid, classes, threshold=threshold),
        "note": "Validation metrics come from the 20 % held out for calibration; the cross-validation of the same "
                "recipe (mpoxscan cv) is the estimate of its accuracy.",
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if any(rows[k].ita for k in split.valid):  # per skin tone (issue 13); a few photos per bin: see the cv figures
        from mpoxscan.data.manifest import row_ita

        card["validation_tone"] = tone_metrics([rows[k].label for k in split.valid], p_valid, classes,
                                               [row_ita(rows[k]) for k in split.valid], threshold=threshold)
    card = json.loads(json.dumps(card))  # plain JSON types, identical in the checkpoint and in card.json
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"card": card, "state_dict": model.state_dict()}, out / CHECKPOINT)
    (out / CARD).write_text(json.dumps(card, indent=2) + "\n")
    return card


def _logits(model, paths: list[str], prep, batch: int = 32) -> np.ndarray:
    import torch

    from mpoxscan.images import load_image

    outs = []
    with torch.inference_mode():
        for start in range(0, len(paths), batch):
            x = prep.batch([load_image(p, min_side=prep.input_size) for p in paths[start:start + batch]])
            outs.append(model(torch.from_numpy(x)).numpy())
    return np.concatenate(outs) if outs else np.zeros((0, model.num_classes), np.float32)


def load_checkpoint(path: Path):
    """(model, card) from a checkpoint written by :func:`train`; a clear error for anything else."""
    import torch

    from mpoxscan.models import create_model

    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        card = data["card"]
        model = create_model(card["architecture"], pretrained=False, num_classes=len(card["classes"]))
        model.load_state_dict(data["state_dict"], strict=True)
    except FileNotFoundError:
        raise MpoxscanError(f"{path}: no such checkpoint") from None
    except Exception as exc:  # torch.load raises many types (UnpicklingError, RuntimeError, ...) for a foreign file
        raise MpoxscanError(f"{path}: not an mpoxscan checkpoint ({str(exc).splitlines()[0][:120]})") from None
    return model.eval(), card
