"""`mpoxscan explain MODEL IMAGE...`: heat maps over photos, with the answer in the picture."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mpoxscan.errors import MpoxscanError


def explain_images(model_path: Path | str, images: list[Path], out: Path, method: str = "gradcam",
                   progress: bool = True) -> list[dict]:
    """Write ``out/<photo>.<method>.png`` for each photo and return one record per photo (or its error).

    ``model_path``: a checkpoint from `mpoxscan train` (every method, through captum), or an exported ``.onnx``
    file (its on-device ``cam`` output, which equals Grad-CAM for these networks)."""
    from tqdm import tqdm

    from mpoxscan.deploy.answer import AnswerRule, screened_positive
    from mpoxscan.deploy.runtime import Screener
    from mpoxscan.explain.overlay import overlay
    from mpoxscan.images import load_image

    model_path = Path(model_path)
    onnx = model_path.suffix == ".onnx"
    if onnx and method != "gradcam":
        raise MpoxscanError(f"an ONNX file explains with its on-device map (gradcam) only; '{method}' needs the "
                            "checkpoint (model.pt) and PyTorch")
    if onnx:
        screener = Screener(model_path)
        classes, prep, rule = screener.classes, screener.preprocessing, screener.rule
    else:
        import torch

        from mpoxscan.explain.attribution import attribute
        from mpoxscan.preprocess import Preprocessing
        from mpoxscan.numeric import softmax
        from mpoxscan.models.checkpoint import load_checkpoint

        model, card = load_checkpoint(model_path)
        p = card["preprocessing"]
        prep = Preprocessing.from_dict(p)
        # A checkpoint has no off-task subspace or quality limits (export adds them): its answers are positive or
        # negative only.
        classes, rule = card["classes"], AnswerRule.from_meta(card)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for path in tqdm(images, desc=f"explain ({method})", unit="img", disable=not progress or len(images) < 2):
        try:
            photo = load_image(path, min_side=prep.input_size)
        except MpoxscanError as exc:
            records.append({"image": str(path), "error": str(exc)})
            continue
        seen = prep.resize_crop(photo)
        x = prep.normalize(seen)[None]
        measures = {}
        if onnx:
            outputs = screener.run(x)
            proba, heat, measures = outputs["probabilities"][0], outputs["cam"][0], screener.measures(outputs, 0, photo)
        else:
            with torch.no_grad():
                proba = softmax(model(torch.from_numpy(x)).numpy(), card["temperature"])[0]
            heat = attribute(model, torch.from_numpy(x), int(np.argmax(proba)), method)[0]
        k = int(np.argmax(proba))
        positive = rule.positive_class
        p_pos = float(proba[classes.index(positive)])
        answer, reason = rule.decide(p_pos, min(photo.size), measures)
        # "cannot tell" leads: for a photo the model cannot judge, its top class is not an answer
        caption = " · ".join(([f"cannot tell: {reason}"] if reason else [])
                             + [f"{'top class ' if reason else ''}{classes[k]} {100 * proba[k]:.0f} %"]
                             + ([f"{positive} {100 * p_pos:.0f} %"] if classes[k] != positive else [])
                             + (["flagged"] if answer == "positive" else [])
                             + [method] + (["no positive evidence to map"] if float(np.max(heat)) <= 0 else []))
        target = out / f"{Path(path).stem}.{method}.png"
        overlay(seen, np.asarray(heat, np.float32), caption).save(target)
        records.append({"image": str(path), "explanation": str(target), "predicted": classes[k],
                        "probability": round(float(proba[k]), 4), "positive_probability": round(p_pos, 4),
                        "flagged": screened_positive(answer), "answer": answer, "reason": reason, "method": method})
    return records
