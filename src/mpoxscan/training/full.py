"""The `full` strategy: every layer of a pretrained backbone trained, made for a GPU and still runnable on a CPU.

AdamW with a lower learning rate for the backbone than for the new classifier (optionally decaying stage by stage
towards the input, and the backbone frozen for the first epochs: linear probe, then fine-tune), warm-up then cosine,
weight decay, label smoothing, class-balanced loss, optional weight EMA and mixup / CutMix, and the epoch chosen by
the loss on the inner validation split. Photos are decoded once at the input size into a uint8 tensor on the
device and augmented there per batch (:mod:`mpoxscan.training.augment`); on CUDA the network runs channels-last
under bf16 autocast. The optional ``teachers`` turn it into the student of a distillation.
"""

from __future__ import annotations

import copy
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from mpoxscan.errors import MpoxscanError
from mpoxscan.training.features import preprocessing_for
from mpoxscan.training.options import refuse_unknown
from mpoxscan.preprocess import Preprocessing

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class FullParams:
    """Fixed in advance (not tuned on any test fold); the defaults follow the first GPU probe (TOOLCHAIN.md)."""

    epochs: int = 40
    batch_size: int = 32
    lr: float = 1e-3  # the new classifier's peak learning rate
    backbone_lr_ratio: float = 0.25  # the pretrained layers learn this much more slowly
    weight_decay: float = 0.05
    warmup_epochs: float = 2.0
    label_smoothing: float = 0.1
    class_balanced: bool = True
    ema_decay: float = 0.0  # 0: off (the probe measured EMA worse on ~500 training photos)
    mixup: float = 0.0  # Beta alpha; 0: off (the probe measured mixup / CutMix worse)
    cutmix: float = 0.0
    min_scale: float = 0.5  # random resized crop: the smallest share of the photo's area
    jitter: float = 0.2
    input_size: int | None = None  # None: the backbone's own
    tta: str = "flip"  # test-time augmentation when asked: "flip" (2 views) or "dihedral" (8)
    device: str = "auto"
    channels_last: bool = True  # CUDA only
    bf16: bool = True  # CUDA only: autocast to bfloat16
    eval_batch: int = 128
    # Batch-norm statistics re-estimated on the training photos (plain views) before each validation: the Lite
    # ports keep TensorFlow's momentum of 0.01, so that over a few hundred steps the running statistics lag far
    # behind the weights (measured on the GPU: best epoch always the last, validation loss above chance at first).
    precise_bn: bool = True
    threads: int = 0  # CPU threads of PyTorch; 0: its default (1 is far faster on a shared, busy machine)
    # cuDNN's autotuning of every new input shape (train, last partial batch, recalibration, evaluation). Off since
    # 2026-11-27: on the H100 shared by 8 processes a network's first training took 146-158 s with it and a later one
    # of the same shapes 52-58 s; tuning and CUDA start-up were not separated, and no A/B run was made. With it off,
    # 40 epochs of batch 32 took 170-207 s (first epoch ~30 s), which is fast enough for one device call.
    cudnn_benchmark: bool = False
    # Distillation (used when teachers are given): loss = (1 - alpha) CE(labels) + alpha T^2 KL(teacher_T | student_T)
    distill_alpha: float = 0.7
    distill_temperature: float = 2.0
    # Layer-wise learning-rate decay: each backbone stage (stem, each block, the head convolution) learns
    # layer_decay times as fast as the stage after it, so the earliest, most generic features move least. 1: off.
    layer_decay: float = 1.0
    # Linear probe, then fine-tune (Kumar et al., ICLR 2022): for the first epochs only the new classifier learns (the
    # backbone frozen: no gradients, batch norm in inference mode), so that a random head does not distort the
    # pretrained features; then every layer, with its own warm-up and cosine over the remaining epochs. 0: off.
    head_only_epochs: int = 0

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise MpoxscanError(f"unknown device '{self.device}' (known: {', '.join(DEVICES)})")
        if self.tta not in ("flip", "dihedral"):
            raise MpoxscanError(f"unknown tta '{self.tta}' (known: flip, dihedral)")
        if self.epochs < 1 or self.batch_size < 1 or not 0 <= self.ema_decay < 1:
            raise MpoxscanError("full: epochs and batch_size must be at least 1 and ema_decay in [0, 1)")
        if not 0 < self.layer_decay <= 1:
            raise MpoxscanError(f"full: layer_decay must be in (0, 1], not {self.layer_decay}")
        if not 0 <= self.head_only_epochs < self.epochs:
            raise MpoxscanError(f"full: head_only_epochs must be at least 0 and below epochs ({self.epochs}), "
                                f"not {self.head_only_epochs}")

    @classmethod
    def from_dict(cls, d: dict | None) -> "FullParams":
        """From a CVConfig's ``extra["full"]``, refusing names that are not options (a typo must not pass)."""
        d = dict(d or {})
        refuse_unknown(cls, d, "full")
        return cls(**d)


def resolve_device(name: str):
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise MpoxscanError("--device cuda: no CUDA device is available to PyTorch")
    return torch.device("cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available()) else "cpu")


@lru_cache(maxsize=4)
def decode_all(paths: tuple[str, ...], prep: Preprocessing, workers: int | None = None) -> np.ndarray:
    """Every photo resized and centre-cropped exactly as screening does it, as uint8 (N, 3, S, S); decoded once per
    process and size (threads: Pillow releases the GIL while it decodes and resizes)."""
    from mpoxscan.images import load_image

    def one(path: str) -> np.ndarray:
        return np.asarray(prep.resize_crop(load_image(path, min_side=prep.input_size)).convert("RGB")).transpose(2, 0, 1)

    with ThreadPoolExecutor(workers or min(16, os.cpu_count() or 1)) as pool:
        return np.stack(list(pool.map(one, paths)))


def distillation_loss(student_logits, teacher_proba_t, targets, ce_loss, alpha: float, temperature: float):
    """Hinton et al. (2015): (1 - alpha) ce_loss(student, targets) + alpha T^2 KL(teacher at T || student at T).
    ``teacher_proba_t``: the teachers' mean softmax at temperature T (an ensemble averages probabilities)."""
    from torch.nn import functional as F

    log_student_t = F.log_softmax(student_logits.float() / temperature, dim=1)
    kl = F.kl_div(log_student_t, teacher_proba_t.float().clamp_min(1e-8).log(), log_target=True,
                  reduction="batchmean")
    return (1 - alpha) * ce_loss(student_logits.float(), targets) + alpha * temperature ** 2 * kl


@dataclass
class Teacher:
    """A trained network that the student learns from, with its own input size and normalisation."""

    model: object
    prep: Preprocessing


def backbone_stages(model) -> list[list]:
    """The backbone's parameters (the classifier's left out) by stage, input side first: a stage is the module path
    up to its first numeric index ("_blocks.3", "features.12"); modules without one form the stem before the first
    indexed stage and the head after the last ("_conv_stem" with "_bn0"; "_conv_head" with "_bn1"). The order is the
    one the network registers them in, which for the zoo's networks is the order of the forward pass."""
    head = {id(p) for p in model.get_classifier().parameters()}
    stages: dict[str, list] = {}
    seen_indexed = False
    for name, p in model.named_parameters():
        if id(p) in head:
            continue
        parts = name.split(".")
        cut = next((i + 1 for i, part in enumerate(parts[:-1]) if part.isdigit()), None)
        seen_indexed = seen_indexed or cut is not None
        key = ".".join(parts[:cut]) if cut else (" head" if seen_indexed else " stem")
        stages.setdefault(key, []).append(p)
    return list(stages.values())


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Optimizer steps in one epoch as the training loop takes them: a last batch of one photo is skipped (batch
    norm cannot train on it), so that the schedule ends where the training does."""
    if n_train <= 1:
        return 1
    return max(1, n_train // batch_size + (n_train % batch_size >= 2))


def make_optimizer(model, params: FullParams, epoch_steps: int, fused: bool = False):
    """AdamW and its per-step schedule: the classifier at ``params.lr``, the backbone at ``backbone_lr_ratio`` of it
    (times ``layer_decay`` per stage from the top), no weight decay on biases and batch-norm scales; warm-up then
    cosine, the backbone's own starting after ``head_only_epochs`` (the training loop freezes it until then).
    (optimizer, LambdaLR scheduler)."""
    import torch

    slow = params.lr * params.backbone_lr_ratio
    # Without layer decay the backbone is one group (4 groups in all: fewer kernel launches of a fused AdamW).
    stages = backbone_stages(model) if params.layer_decay < 1 else [
        [p for stage in backbone_stages(model) for p in stage]]
    groups, is_head = [], []
    for depth, stage in enumerate(stages):
        lr = slow * params.layer_decay ** (len(stages) - 1 - depth)
        groups += [{"params": [p for p in stage if p.ndim > 1], "weight_decay": params.weight_decay, "lr": lr},
                   {"params": [p for p in stage if p.ndim <= 1], "weight_decay": 0.0, "lr": lr}]
        is_head += [False, False]
    head = list(model.get_classifier().parameters())
    groups += [{"params": [p for p in head if p.ndim > 1], "weight_decay": params.weight_decay, "lr": params.lr},
               {"params": [p for p in head if p.ndim <= 1], "weight_decay": 0.0, "lr": params.lr}]
    is_head += [True, True]
    kept = [(g, h) for g, h in zip(groups, is_head) if g["params"]]  # a stage may lack biases
    optim = torch.optim.AdamW([g for g, _ in kept], lr=params.lr, fused=fused)
    total = params.epochs * epoch_steps
    warmup = int(params.warmup_epochs * epoch_steps)
    frozen = params.head_only_epochs * epoch_steps

    def head_factor(step: int) -> float:
        return warmup_cosine(step, total, warmup)

    def backbone_factor(step: int) -> float:
        return 0.0 if step < frozen else warmup_cosine(step - frozen, total - frozen, warmup)

    sched = torch.optim.lr_scheduler.LambdaLR(optim, [head_factor if h else backbone_factor for _, h in kept])
    return optim, sched


def freeze_backbone(model, frozen: bool) -> None:
    """A linear probe's backbone: no gradients (so no optimizer state, no weight decay, no backward pass through it)
    and batch norm normalising with its running statistics, not the batch's, and not updating them (precise BN still
    re-estimates them before each validation); undone with ``frozen=False``."""
    head = set(model.get_classifier().modules())
    for module in model.modules():
        if module not in head and not list(module.children()):
            module.train(not frozen and model.training)
            for p in module.parameters(recurse=False):
                p.requires_grad_(not frozen)


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    """The learning-rate factor at ``step``: linear warm-up to 1, then cosine decay to 0."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


class _Normalise:
    """[0, 1] images -> the network's input: resized if needed, standardised, channels-last on CUDA."""

    def __init__(self, prep: Preprocessing, device, channels_last: bool) -> None:
        import torch

        self.size = prep.input_size
        self.mean = torch.tensor(prep.mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(prep.std, device=device).view(1, 3, 1, 1)
        self.channels_last = channels_last

    def __call__(self, x):
        import torch
        from torch.nn import functional as F

        if x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def _autocast(device, bf16: bool):
    import contextlib

    import torch

    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" and bf16 else contextlib.nullcontext()


def recalibrate_bn(model, images, index, norm: "_Normalise", params: FullParams, device, seed: int = 0) -> None:
    """Batch-norm running statistics recomputed over ``images[index]`` (precise BN). PyTorch's ``update_bn`` gives
    each batch the same weight, so the photos are shuffled (training lists are sorted by class) and split into
    batches of equal size, at most ``params.eval_batch`` and never a single photo (batch norm cannot train on one)."""
    import torch
    from torch.optim.swa_utils import update_bn

    if len(index) < 2:
        return
    order = np.random.default_rng(seed).permutation(np.asarray(index))
    chunks = np.array_split(order, -(-len(order) // params.eval_batch))  # sizes differ by at most one photo
    batches = (norm(images[torch.as_tensor(c, device=device)].float() / 255.0) for c in chunks)
    with _autocast(device, params.bf16):
        update_bn(batches, model)


def predict_logits(model, images, index, prep: Preprocessing, params: FullParams, device, tta: bool = False) -> np.ndarray:
    """Logits of ``images[index]`` (uint8 on ``device``): the plain view, or with ``tta`` the mean logits over
    flips (and quarter turns with ``params.tta == "dihedral"``)."""
    import torch

    from mpoxscan.training.augment import dihedral

    norm = _Normalise(prep, device, device.type == "cuda" and params.channels_last)
    views = ([0] if not tta else [0, 4] if params.tta == "flip" else list(range(8)))
    model.eval()
    out = []
    with torch.inference_mode(), _autocast(device, params.bf16):
        for start in range(0, len(index), params.eval_batch):
            x = images[torch.as_tensor(index[start:start + params.eval_batch], device=device)].float() / 255.0
            out.append(torch.stack([model(norm(dihedral(x, k))).float() for k in views]).mean(0).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, model.num_classes), np.float32)


def train_network(model_name: str, images, labels, train_idx: list[int], valid_idx: list[int], n_classes: int,
                  params: FullParams, seed: int = 0, teachers: list[Teacher] | None = None,
                  progress: bool = False, desc: str = ""):
    """Train every layer of ``model_name`` on ``images[train_idx]`` (uint8 (N, 3, S, S) on the device), choosing the
    epoch by the loss on ``valid_idx``; (model on the device, facts)."""
    import torch
    from torch import nn
    from tqdm import tqdm

    from mpoxscan.models import create_model
    from mpoxscan.training.augment import augment_batch, mix

    device = images.device
    prep = preprocessing_for(model_name, params.input_size)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    if device.type == "cpu" and params.threads:
        torch.set_num_threads(params.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = params.cudnn_benchmark
    channels_last = device.type == "cuda" and params.channels_last
    model = create_model(model_name, pretrained=True, num_classes=n_classes).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optim, sched = make_optimizer(model, params, steps_per_epoch(len(train_idx), params.batch_size),
                                  fused=device.type == "cuda")
    counts = np.bincount(labels[train_idx].cpu().numpy(), minlength=n_classes).astype(float)
    weights = (torch.tensor(len(train_idx) / (n_classes * np.maximum(counts, 1)), dtype=torch.float32, device=device)
               if params.class_balanced else None)
    ce = nn.CrossEntropyLoss(weight=weights, label_smoothing=params.label_smoothing)
    ema = None
    if params.ema_decay > 0:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(params.ema_decay), use_buffers=True)
    norm = _Normalise(prep, device, channels_last)
    teacher_norms = [_Normalise(t.prep, device, channels_last) for t in teachers or []]
    y_valid = labels[torch.as_tensor(valid_idx, device=device)].cpu()
    train_idx_t = torch.as_tensor(train_idx)
    best: tuple[float, int, dict | None] = (float("inf"), -1, None)
    history = []
    started = time.perf_counter()
    bar = tqdm(range(params.epochs), desc=desc or f"full {model_name}", unit="epoch", disable=not progress)
    for epoch in bar:
        model.train()
        if epoch < params.head_only_epochs:
            freeze_backbone(model, True)  # linear probe: only the new classifier learns
        elif epoch == params.head_only_epochs and epoch:
            freeze_backbone(model, False)
        order = train_idx_t[torch.randperm(len(train_idx), generator=generator)]
        for start in range(0, len(order), params.batch_size):
            idx = order[start:start + params.batch_size].to(device)
            if len(idx) < 2 and len(order) > 1:
                continue  # batch-norm cannot train on a single image
            x = augment_batch(images[idx], prep.input_size, generator, params.min_scale, params.jitter)
            target = nn.functional.one_hot(labels[idx], n_classes).float()
            x, target = mix(x, target, generator, params.mixup, params.cutmix)
            with _autocast(device, params.bf16):
                logits = model(norm(x))
                if teachers:
                    with torch.no_grad():
                        t = params.distill_temperature
                        p_t = torch.stack([torch.softmax(tm.model(tn(x)).float() / t, 1)
                                           for tm, tn in zip(teachers, teacher_norms)]).mean(0)
            if teachers:
                loss = distillation_loss(logits, p_t, target, ce, params.distill_alpha, params.distill_temperature)
            else:
                loss = ce(logits.float(), target)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            sched.step()
            if ema is not None:
                ema.update_parameters(model)
        judged = ema.module if ema is not None else model
        if params.precise_bn:
            recalibrate_bn(judged, images, train_idx, norm, params, device, seed)
        val_logits = torch.from_numpy(predict_logits(judged, images, valid_idx, prep, params, device))
        val_loss = float(nn.functional.cross_entropy(val_logits, y_valid)) if len(valid_idx) else float(-epoch)
        history.append(round(val_loss, 4))
        bar.set_postfix(valid_loss=f"{val_loss:.3f}", best_epoch=best[1] + 1)
        if val_loss < best[0]:
            best = (val_loss, epoch, {k: v.detach().clone() for k, v in judged.state_dict().items()})
    bar.close()
    final = copy.deepcopy(ema.module) if ema is not None else model
    final.load_state_dict(best[2])
    final.spec = model.spec
    info = {"best_epoch": best[1] + 1, "epochs": params.epochs, "best_valid_loss": round(best[0], 4),
            "valid_loss_history": history, "input_size": prep.input_size,
            # Kept apart: `train` leaves it out of the card, so that an exported file depends on the weights alone.
            "timing": {"device": device.type, "train_seconds": round(time.perf_counter() - started, 2),
                       "images_per_second": round(params.epochs * len(train_idx) / max(time.perf_counter() - started, 1e-9), 1)}}
    return final.eval(), info


def device_images(rows, prep: Preprocessing, device):
    """All rows' photos decoded once (per process and size), as a uint8 tensor on ``device``."""
    import torch

    return torch.from_numpy(decode_all(tuple(r.path for r in rows), prep)).to(device)


def full_fold(model_name: str, rows, split, classes: list[str], config, progress: bool = False,
              params: FullParams | None = None, return_model: bool = False, keep_model: bool = False,
              teachers: list[Teacher] | None = None):
    """Train on ``split.train``, select the epoch on ``split.valid``; the fold's logits (plain view, or with
    ``config.tta`` the TTA ones; the other kind in ``extra_outputs``), or with ``return_model`` (model, facts)."""
    import torch

    from mpoxscan.training.outputs import FoldOutput

    params = params or FullParams.from_dict(config.extra.get("full"))
    device = resolve_device(params.device)
    prep = preprocessing_for(model_name, params.input_size)
    images = device_images(rows, prep, device)
    labels = torch.tensor([classes.index(r.label) for r in rows], device=device)
    model, info = train_network(model_name, images, labels, split.train, split.valid, len(classes), params,
                                config.seed, teachers, progress)
    if return_model:
        return model.float().cpu().to(memory_format=torch.contiguous_format).eval(), info
    logits = {tta: (predict_logits(model, images, split.test, prep, params, device, tta),
                    predict_logits(model, images, split.valid, prep, params, device, tta)) for tta in (False, True)}
    main = logits[bool(config.tta)]
    network = model.float().cpu().to(memory_format=torch.contiguous_format).eval() if keep_model else None
    out = FoldOutput(main[0], main[1], info, network)
    out.extra_outputs = {"notta" if config.tta else "tta": logits[not config.tta]}
    return out
