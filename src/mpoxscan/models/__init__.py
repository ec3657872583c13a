"""The backbone zoo: ImageNet-pretrained mobile CNNs in plain PyTorch, weights from installed packages.

    >>> from mpoxscan.models import create_model
    >>> model = create_model("efficientnet_lite0", pretrained=True, num_classes=6)
"""

from __future__ import annotations

from mpoxscan.errors import WeightsError
from mpoxscan.models.registry import ModelSpec, get_spec, list_models

__all__ = ["ModelSpec", "create_model", "get_spec", "list_models", "count_parameters"]


def create_model(name: str, pretrained: bool = True, num_classes: int = 1000):
    """Build backbone ``name``; with ``pretrained``, load its verified ImageNet weights strictly, then give it a
    fresh classifier if ``num_classes`` differs from ImageNet's 1000."""
    from mpoxscan.models.weights import load_state_dict

    spec = get_spec(name)
    model = spec.build()
    if pretrained:
        state = load_state_dict(spec.weights)
        try:
            head = classifier_keys(model)
            if num_classes != model.num_classes and not head & set(state):
                # A slim weight file (no ImageNet classifier): strict for everything but the classifier, which is
                # replaced below anyway.
                missing, unexpected = model.load_state_dict(state, strict=False)
                if set(missing) != head or unexpected:
                    raise RuntimeError(f"missing {sorted(set(missing) - head)[:3]}, unexpected {unexpected[:3]}")
            else:
                model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise WeightsError(f"{spec.weights.path} does not fit {name}: {first}") from None
    if num_classes != model.num_classes:
        model.reset_classifier(num_classes)
    model.eval()
    model.spec = spec  # lets later stages find the preprocessing from the model alone
    return model


def classifier_keys(model) -> set[str]:
    """The state-dict keys of a backbone's ImageNet classifier."""
    ids = {id(p) for p in model.get_classifier().parameters()}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def count_parameters(name: str) -> int:
    """Parameters of the ImageNet model ``name``, counted without allocating its weights."""
    import torch

    with torch.device("meta"):
        model = get_spec(name).build()
    return sum(p.numel() for p in model.parameters())
