"""`mpoxscan train`: one final model on all training images, saved as a self-describing checkpoint."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
from collections.abc import Collection
from pathlib import Path

import numpy as np

from mpoxscan.data.manifest import kept_rows, manifest_digest, rows_digest
from mpoxscan.data.splits import inner_split  # noqa: F401  (re-exported: older imports)
from mpoxscan.errors import MpoxscanError
from mpoxscan.evaluation.metrics import classification_metrics, tone_metrics
from mpoxscan.models.checkpoint import CARD, CHECKPOINT, card_core, load_checkpoint  # noqa: F401  (re-exported)
from mpoxscan.numeric import softmax
from mpoxscan.training.cv import STRATEGIES, CVConfig, check_options, fit_calibration, resolved_options
from mpoxscan.training.features import preprocessing_for



def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def train(manifest: Path, model_name: str, strategy: str, out: Path, views: int = 4, seed: int = 0,
          cache: Path | None = None, force: bool = False, options: dict | None = None,
          apart: Collection[str] = ()) -> dict:
    """``options``: the strategies' typed options by strategy name, e.g. {"full": {"epochs": 30, "device": "cuda"}}.
    ``apart``: sources split on their own for the held-out 20 % (``data.splits.inner_split``; the card records them)."""
    import torch

    out = Path(out)
    if (out / CHECKPOINT).exists() and not force:
        raise MpoxscanError(f"{out / CHECKPOINT} exists: choose another --out or add --force")
    if strategy not in STRATEGIES:
        raise MpoxscanError(f"unknown strategy '{strategy}' (known: {', '.join(STRATEGIES)})")
    rows = kept_rows(manifest)
    classes = sorted({r.label for r in rows})
    config = CVConfig(manifest=str(manifest), models=[model_name], strategy=strategy, protocol="final", views=views,
                      seed=seed, extra={**(options or {}), **({"cache": str(cache)} if cache else {})})
    split = inner_split(rows, seed, apart)
    started = time.perf_counter()
    check_options(config)
    recorded = resolved_options(strategy, config.extra)
    config.extra = {**config.extra, **recorded}
    model, info = STRATEGIES[strategy](model_name, rows, split, classes, config, progress=True, return_model=True)
    model.eval()
    info = _without_timing(info)  # device and speed (the teachers' too): not facts of the weights
    # finetune, full and distill may train at another input size than the backbone's own: the card (and so the
    # exported file's metadata) carries the size the weights were trained at.
    prep = preprocessing_for(model_name, info.get("input_size"))
    logits_valid = _logits(model, [rows[k].path for k in split.valid], prep)
    y_valid = np.array([classes.index(rows[k].label) for k in split.valid])
    temperature, threshold = fit_calibration(logits_valid, y_valid, classes)  # as cv calibrates each fold
    p_valid = softmax(logits_valid, temperature)
    card = {
        **card_core(model_name, strategy, classes, dataclasses.asdict(prep), temperature, threshold),
        "training": {**info, "options": recorded, "views": views, "seed": seed, "images_fit": len(split.train), "images_valid": len(split.valid),
                     **({"split_apart": sorted(apart)} if apart else {}),
                     "seconds": round(time.perf_counter() - started, 1)},
        "data": {"manifest": str(Path(manifest).resolve()), "manifest_sha256": manifest_digest(manifest),
                 "rows_sha256": rows_digest(rows), "images": len(rows)},
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
    card = _plain_json(card)  # plain JSON types, identical in the checkpoint and in card.json
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"card": card, "state_dict": model.state_dict()}, out / CHECKPOINT)
    (out / CARD).write_text(json.dumps(card, indent=2) + "\n")
    return card


def _without_timing(value):
    """``value`` without any "timing" entry, however deep (so that an exported file depends on the weights alone)."""
    if isinstance(value, dict):
        return {k: _without_timing(v) for k, v in value.items() if k != "timing"}
    return [_without_timing(v) for v in value] if isinstance(value, list) else value


def _logits(model, paths: list[str], prep, batch: int = 32) -> np.ndarray:
    import torch

    from mpoxscan.images import load_image

    outs = []
    with torch.inference_mode():
        for start in range(0, len(paths), batch):
            x = prep.batch([load_image(p, min_side=prep.input_size) for p in paths[start:start + batch]])
            outs.append(model(torch.from_numpy(x)).numpy())
    return np.concatenate(outs) if outs else np.zeros((0, model.num_classes), np.float32)


def _plain_json(value):
    """Plain JSON types with null for NaN (an empty skin-tone bin has no accuracy): strict JSON, and a card equal
    to itself after a round trip (NaN != NaN)."""
    import math

    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return clean(json.loads(json.dumps(value)))
