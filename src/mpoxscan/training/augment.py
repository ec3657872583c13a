"""Augmentation of whole batches with torch ops, on whatever device holds them (the GPU path's data pipeline).

Photos are decoded once into a uint8 tensor (N, 3, S, S) at the network's input size; each batch is then cropped,
flipped, turned and colour-jittered on the device, so that no CPU worker has to keep a GPU fed. The same
transformations as :mod:`mpoxscan.training.views` (which makes the cached views of the CPU strategies).
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F


def crop_flip_turn_matrices(n: int, generator: torch.Generator, min_scale: float = 0.5,
                            ratio: tuple[float, float] = (3 / 4, 4 / 3), device: torch.device | str = "cpu") -> torch.Tensor:
    """(n, 2, 3) affine matrices for ``F.affine_grid``: a random crop of ``min_scale``..1 of the area with aspect in
    ``ratio``, a random horizontal flip and a random quarter turn (lesions have no up and no left)."""
    area = torch.empty(n).uniform_(min_scale, 1.0, generator=generator)
    log_r = torch.empty(n).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    aspect = torch.exp(log_r)
    w = torch.sqrt(area * aspect).clamp(max=1.0)  # fractions of the side, in the normalised [-1, 1] frame
    h = torch.sqrt(area / aspect).clamp(max=1.0)
    tx = (torch.rand(n, generator=generator) * 2 - 1) * (1 - w)
    ty = (torch.rand(n, generator=generator) * 2 - 1) * (1 - h)
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    turns = torch.randint(0, 4, (n,), generator=generator)
    cos = torch.tensor([1.0, 0.0, -1.0, 0.0])[turns]  # exact quarter turns: no interpolation error from sin(pi/2)
    sin = torch.tensor([0.0, 1.0, 0.0, -1.0])[turns]
    rot = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)  # (n, 2, 2)
    linear = torch.diag_embed(torch.stack([w, h], 1)) @ rot @ torch.diag_embed(torch.stack([flip, torch.ones(n)], 1))
    return torch.cat([linear, torch.stack([tx, ty], 1)[:, :, None]], 2).to(device)


def colour_jitter(x: torch.Tensor, generator: torch.Generator, strength: float = 0.2) -> torch.Tensor:
    """Brightness, contrast and saturation each scaled by a factor in 1 +- ``strength`` per image (x in [0, 1])."""
    n = x.shape[0]

    def factors() -> torch.Tensor:
        return (1 + (torch.rand(n, generator=generator) * 2 - 1) * strength).to(x.device, x.dtype).view(n, 1, 1, 1)

    gray_weights = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    x = x * factors()
    mean = (x * gray_weights).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    x = (x - mean) * factors() + mean
    gray = (x * gray_weights).sum(1, keepdim=True)
    x = (x - gray) * factors() + gray
    return x.clamp(0, 1)


def augment_batch(images: torch.Tensor, size: int, generator: torch.Generator, min_scale: float = 0.5,
                  jitter: float = 0.2, ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> torch.Tensor:
    """uint8 images (n, 3, S, S) -> float (n, 3, size, size) in [0, 1]: random resized crop, flip, quarter turn,
    colour jitter. ``generator`` is a CPU generator, so that the draws are the same on every device."""
    x = images.float() / 255.0
    theta = crop_flip_turn_matrices(x.shape[0], generator, min_scale, ratio, device=x.device)
    grid = F.affine_grid(theta.to(x.dtype), [x.shape[0], 3, size, size], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return colour_jitter(x, generator, jitter) if jitter > 0 else x


def mix(x: torch.Tensor, targets: torch.Tensor, generator: torch.Generator, mixup: float = 0.0,
        cutmix: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup or CutMix (half the batches each when both are on; Beta(alpha, alpha) weights) of images and their
    soft targets (n, C); unchanged when both alphas are 0."""
    if mixup <= 0 and cutmix <= 0:
        return x, targets
    use_cutmix = cutmix > 0 and (mixup <= 0 or torch.rand(1, generator=generator).item() < 0.5)
    alpha = cutmix if use_cutmix else mixup
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(x.shape[0], generator=generator).to(x.device)
    if use_cutmix:
        s = x.shape[-1]
        cut = int(round(s * math.sqrt(1 - lam)))
        cy, cx = (int(v) for v in torch.randint(0, s, (2,), generator=generator))
        y0, y1, x0, x1 = max(cy - cut // 2, 0), min(cy + cut // 2, s), max(cx - cut // 2, 0), min(cx + cut // 2, s)
        x = x.clone()
        x[:, :, y0:y1, x0:x1] = x[perm][:, :, y0:y1, x0:x1]
        lam = 1 - (y1 - y0) * (x1 - x0) / (s * s)  # the share of the image that stayed
    else:
        x = lam * x + (1 - lam) * x[perm]
    return x, lam * targets + (1 - lam) * targets[perm]


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th of the 8 flips and quarter turns of a square batch (k = 0: unchanged); for test-time augmentation."""
    if k >= 4:
        x = x.flip(-1)
    return torch.rot90(x, k % 4, dims=(-2, -1))
