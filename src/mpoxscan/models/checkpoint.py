"""The checkpoint `mpoxscan train` writes (``model.pt``: the card and the weights) and the one way to load it.

Here, not in training, so that export, explanation and the bundle can load a model without importing training.
"""

from __future__ import annotations

from pathlib import Path

from mpoxscan.errors import MpoxscanError

CHECKPOINT = "model.pt"
CARD = "card.json"
POSITIVE = "Monkeypox"  # as mpoxscan.evaluation.metrics.POSITIVE (not imported: it would pull in SciPy)


def card_core(architecture: str, strategy: str, classes: list[str], preprocessing: dict, temperature: float,
              threshold: float) -> dict:
    """What every model card holds, whoever writes it (`train`'s checkpoint, `cv`'s per-fold exports): enough to
    rebuild the network, preprocess, calibrate and screen."""
    return {"architecture": architecture, "strategy": strategy, "classes": list(classes),
            "positive_class": POSITIVE if POSITIVE in classes else classes[0], "preprocessing": preprocessing,
            "temperature": float(temperature), "screening_threshold": float(threshold)}


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
