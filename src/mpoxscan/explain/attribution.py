"""Attribution maps for a zoo network: Grad-CAM, Grad-CAM++, occlusion and integrated gradients.

Captum computes Grad-CAM, occlusion and integrated gradients. Captum has no Grad-CAM++, so that one is written here
from the last feature map and its gradient (Chattopadhay et al., 2018, with the usual exponential-output
closed form), which the backbone API exposes directly (``forward_features`` / ``forward_head``).
"""

from __future__ import annotations

import numpy as np

METHODS = ("gradcam", "gradcam++", "occlusion", "integrated-gradients")


def _normalise(heat: np.ndarray) -> np.ndarray:
    heat = np.nan_to_num(heat.astype(np.float32))
    top = float(heat.max())
    return heat / top if top > 0 else np.zeros_like(heat)


def _upsample(maps, size: int):
    from torch.nn import functional as F

    return F.interpolate(maps, size=(size, size), mode="bilinear", align_corners=False)


def gradcam_maps(model, x, target):
    """Grad-CAM of the last convolutional layer (captum), before upsampling: (N, h, w)."""
    from captum.attr import LayerGradCam

    return LayerGradCam(model, model.cam_layer).attribute(x, target=target, relu_attributions=True)[:, 0]


def _gradcam_pp(model, x, target):
    import torch

    feats = model.forward_features(x)
    logits = model.forward_head(model.pool(feats))
    score = logits.gather(1, target.view(-1, 1)).sum()
    grads = torch.autograd.grad(score, feats)[0]
    g2, g3 = grads.pow(2), grads.pow(3)
    denom = 2 * g2 + (feats * g3).sum((2, 3), keepdim=True)
    alpha = g2 / torch.where(denom != 0, denom, torch.ones_like(denom))
    weights = (alpha * torch.relu(grads)).sum((2, 3), keepdim=True)
    return torch.relu((weights * feats).sum(1))


def attribute(model, x, target: int | list[int], method: str = "gradcam"):
    """Maps (N, S, S) in [0, 1] for images ``x`` (N, 3, S, S), one per image, for class ``target``."""
    import torch
    from captum.attr import IntegratedGradients, Occlusion

    if method not in METHODS:
        from mpoxscan.errors import MpoxscanError

        raise MpoxscanError(f"unknown method '{method}' (known: {', '.join(METHODS)})")
    model.eval()
    size = x.shape[-1]
    target = torch.as_tensor([target] * len(x) if isinstance(target, int) else target)
    if method in ("gradcam", "gradcam++"):
        coarse = gradcam_maps(model, x, target) if method == "gradcam" else _gradcam_pp(model, x, target)
        heat = _upsample(coarse.detach()[:, None], size)[:, 0]
    elif method == "occlusion":
        window, stride = max(8, size // 7), max(4, size // 14)
        with torch.no_grad():
            attr = Occlusion(model).attribute(x, target=target, sliding_window_shapes=(3, window, window),
                                              strides=(3, stride, stride), baselines=0.0, perturbations_per_eval=16)
        heat = torch.relu(attr.sum(1))
    else:
        attr = IntegratedGradients(model).attribute(x, target=target, baselines=torch.zeros_like(x), n_steps=32,
                                                    internal_batch_size=16)
        heat = attr.abs().sum(1)
        # Pixel-level IG is speckled; a small blur makes it comparable with the region-level maps.
        heat = torch.nn.functional.avg_pool2d(heat[:, None], 9, stride=1, padding=4, count_include_pad=False)[:, 0]
    return np.stack([_normalise(h) for h in heat.detach().numpy()])
