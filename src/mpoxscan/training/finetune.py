"""The `finetune` strategy: train the last blocks of a pretrained backbone, practical on 2 CPU cores.

The frozen stem and early blocks see each augmented view once: their output is cached (on disk, by model, block,
view and image checksum), and each epoch trains only the last blocks, the head convolution and a new classifier
on a random cached view of each training image. Early stopping and model selection use the inner validation split.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass

import numpy as np

from mpoxscan.images import load_image
from mpoxscan.training.features import FeatureCache, frozen_session, preprocessing_for, task_preprocessing
from mpoxscan.training.options import refuse_unknown
from mpoxscan.training.views import make_view


@dataclass(frozen=True)
class FinetuneParams:
    """Fixed in advance (not tuned on any test fold)."""

    train_blocks: int = 5  # EfficientNet-Lite0: its last two stages (7 x 7 at 224 px); MobileNetV2: its last two stages too
    epochs: int = 40
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    patience: int = 8
    freeze_batchnorm: bool = True  # keep the pretrained statistics: batches of 32 from ~500 images are noisy
    # Skin tone (issue 13): in MSLD v2.0 mpox is 62 % of the dark photos but 26-32 % of the three lightest bins; a
    # network learns that shortcut. tone_balance re-weights the training images so that, within each ITA bin, the
    # class mix is the overall one; tone_views moves the skin of every augmented view to a random tone.
    tone_balance: bool = False
    tone_views: bool = False
    # tone_decorrelation adds to the loss the squared within-class correlation of ITA with the network's mpox
    # log-odds among the batch's non-mpox images (see tone_correlation): the measured shortcut itself, penalised.
    tone_decorrelation: bool = False
    # Compression (issue 13): half of the augmented views are first saved as a low-quality JPEG (training/views.py).
    jpeg_views: bool = False
    # Input size (issue 12): None, the backbone's own. The frozen part then runs (once per view) at this size and
    # the trained blocks see proportionally larger activations (about 2x the training time at 320). The first GPU
    # probe measured whole-network Lite0 3 points better at 320 px than at 224, but with the early blocks frozen
    # 320 px measured worse (docs/research/training.md, "Input size").
    input_size: int | None = None

    @classmethod
    def from_dict(cls, d: dict | None) -> "FinetuneParams":
        """From a CVConfig's ``extra["finetune"]``, refusing names that are not options (a typo must not pass)."""
        d = dict(d or {})
        refuse_unknown(cls, d, "finetune")
        return cls(**d)


#: Largest factor by which tone balancing up- or down-weights an image: a bin with one Measles photo must not make
#: that photo count as ten.
TONE_WEIGHT_CLIP = 4.0


def tone_balance_weights(labels: list[str], bins: list[str | None], clip: float = TONE_WEIGHT_CLIP) -> np.ndarray:
    """Per-image weights w = P(class) / P(class | tone bin), clipped to [1/clip, clip]: within each bin the weighted
    class mix equals the overall class mix, which removes the correlation of tone with the label (images without
    a tone form their own bin)."""
    labels_a, bins_a = np.asarray(labels, object), np.asarray([b or "" for b in bins], object)
    overall = {c: np.mean(labels_a == c) for c in set(labels)}
    w = np.ones(len(labels_a))
    for b in set(bins_a.tolist()):
        in_bin = bins_a == b
        for c in set(labels_a[in_bin].tolist()):
            cell = in_bin & (labels_a == c)
            w[cell] = overall[c] / (cell.sum() / in_bin.sum())
    return np.clip(w, 1 / clip, clip)


#: Weight of the tone-correlation penalty (a squared correlation, 0..1) against the cross-entropy (about 0.5 to 1.5
#: during training); fixed in advance, not tuned on any test fold.
TONE_DECORRELATION_WEIGHT = 1.0


def tone_correlation(logits, target, ita, positive: int):
    """The pooled within-class Pearson correlation of ITA with the log-odds of the ``positive`` class, over the rows
    whose class is not ``positive`` and whose ITA is known (NaN: unknown), as a differentiable tensor (0 when fewer
    than two such rows share a class). Written by hand because it is a training loss on one batch (the benchmark's
    Spearman is scipy's)."""
    import torch

    others = torch.cat([logits[:, :positive], logits[:, positive + 1:]], dim=1)
    log_odds = logits[:, positive] - torch.logsumexp(others, dim=1)
    keep = (target != positive) & ~torch.isnan(ita)
    z_dev, t_dev = [], []
    for c in torch.unique(target[keep]):
        rows = keep & (target == c)
        if int(rows.sum()) < 2:
            continue
        z_dev.append(log_odds[rows] - log_odds[rows].mean())
        t_dev.append(ita[rows] - ita[rows].mean())
    if not z_dev:
        return logits.sum() * 0.0
    z, t = torch.cat(z_dev), torch.cat(t_dev)
    return (z * t).sum() / ((z.pow(2).sum() * t.pow(2).sum()).sqrt() + 1e-6)


def cached_activations(model_name: str, block: int, items: list[tuple[str, str]], views: list[int],
                       seed: int, cache: FeatureCache, batch: int = 32, progress: bool = False,
                       tone: bool = False, jpeg: bool = False, input_size: int | None = None) -> dict[int, np.ndarray]:
    """{view: float16 (n, C, h, w)}: the frozen part's output for every image and view, computed once (in ONNX
    Runtime) and kept on disk (``tone``, ``jpeg``: the skin-tone and compressed views, and ``input_size`` other
    than the backbone's own, cached under their own names)."""
    own = task_preprocessing(model_name)
    prep = preprocessing_for(model_name, input_size)
    session = None
    out = {}
    for v in views:
        # View 0 is the same with or without tone; the others differ, so their cache entries must too.
        name = (f"activations/{model_name}/block{block}-view{v}-seed{seed}" + ("-tone" if tone and v else "")
                + ("-jpeg" if jpeg and v else "")
                + (f"-{prep.input_size}px" if prep.input_size != own.input_size else ""))
        table = cache.load(name)
        missing = list(dict((sha, p) for p, sha in items if sha not in table).items())
        if missing:
            from tqdm import tqdm

            session = session or frozen_session(model_name, until_block=block, input_size=prep.input_size)
            for start in tqdm(range(0, len(missing), batch), desc=f"activations {model_name} view {v}", unit="batch",
                              disable=not progress):
                chunk = missing[start:start + batch]
                x = np.stack([prep.normalize(make_view(load_image(p, min_side=prep.input_size), prep, sha, v, seed,
                                                           tone=tone, jpeg=jpeg))
                              for sha, p in chunk])
                table.update(zip([sha for sha, _ in chunk], session.run(None, {"image": x})[0].astype(np.float16)))
            cache.save(name, table)
        out[v] = np.stack([table[sha] for _, sha in items])
    return out


def finetune_fold(model_name: str, rows, split, classes: list[str], config, progress: bool = False,
                  params: FinetuneParams | None = None, return_model: bool = False, keep_model: bool = False):
    """Fine-tune on ``split.train``, select the epoch on ``split.valid``; the test logits (or, with
    ``return_model``, the trained network itself and the training facts; ``keep_model`` adds the network to the
    logits)."""
    import torch
    from torch import nn

    from mpoxscan.models import create_model
    from mpoxscan.training.outputs import FoldOutput

    params = params or FinetuneParams.from_dict(config.extra.get("finetune"))
    if (params.tone_balance or params.tone_decorrelation) and not any(r.ita for r in rows):
        from mpoxscan.errors import MpoxscanError

        raise MpoxscanError("tone balancing and decorrelation need skin tones: curate the images again (this manifest "
                            "has no ita column)")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    # OMP_NUM_THREADS when set (a Ray task sets it to its CPUs; a user may too), else every core.
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 0) or os.cpu_count() or 1)
    model = create_model(model_name, pretrained=True, num_classes=len(classes)).eval()
    block = model.num_blocks - params.train_blocks
    views = list(range(config.views + 1))
    acts = cached_activations(model_name, block, [(r.path, r.sha256) for r in rows], views, config.seed,
                              FeatureCache(config.extra.get("cache")), progress=progress, tone=params.tone_views,
                              jpeg=params.jpeg_views, input_size=params.input_size)
    y = torch.tensor([classes.index(r.label) for r in rows])

    trainable = nn.ModuleList(model.modules_from(block) + [model.get_classifier()])
    for p in model.parameters():
        p.requires_grad_(False)
    for p in trainable.parameters():
        p.requires_grad_(True)
    counts = np.bincount(y[split.train].numpy(), minlength=len(classes)).astype(float)
    weights = torch.tensor(len(split.train) / (len(classes) * np.maximum(counts, 1)), dtype=torch.float32)
    loss_fn = nn.CrossEntropyLoss(weight=weights, label_smoothing=params.label_smoothing)
    sample_w = None
    if params.tone_balance:
        from mpoxscan.data.manifest import row_ita
        from mpoxscan.data.skin import ita_bin

        sample_w = torch.ones(len(rows))
        sample_w[split.train] = torch.tensor(tone_balance_weights([rows[k].label for k in split.train],
                                                                  [ita_bin(row_ita(rows[k])) for k in split.train]),
                                             dtype=torch.float32)
        per_image = nn.CrossEntropyLoss(weight=weights, label_smoothing=params.label_smoothing, reduction="none")

    ita = None
    if params.tone_decorrelation:
        from mpoxscan.data.manifest import row_ita
        from mpoxscan.models.checkpoint import POSITIVE

        ita = torch.tensor([np.nan if row_ita(r) is None else row_ita(r) for r in rows], dtype=torch.float32)
        positive = classes.index(POSITIVE) if POSITIVE in classes else 0  # screening's class (a test's toy labels: the first)

    def batch_loss(out: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
        if sample_w is None:
            loss = loss_fn(out, y[idx])
        else:
            # The class-weighted mean as CrossEntropyLoss computes it, each image also weighted by its tone weight.
            target, w = y[idx], sample_w[idx]
            loss = (per_image(out, target) * w).sum() / (weights[target] * w).sum()
        if ita is not None:
            loss = loss + TONE_DECORRELATION_WEIGHT * tone_correlation(out, y[idx], ita[idx], positive).pow(2)
        return loss

    optim = torch.optim.AdamW(trainable.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    steps_per_epoch = -(-len(split.train) // params.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(optim, max_lr=params.lr, total_steps=params.epochs * steps_per_epoch,
                                                pct_start=0.15)

    def logits_of(index: list[int], view: int) -> torch.Tensor:
        model.eval()
        with torch.inference_mode():
            h = torch.from_numpy(acts[view][index].astype(np.float32))
            return model.forward_head(model.pool(model.forward_from(h, block)))

    from tqdm import tqdm

    best = (float("inf"), -1, None)
    train_idx = np.array(split.train)
    bar = tqdm(range(params.epochs), desc=f"finetune {model_name}", unit="epoch", disable=not progress)
    for epoch in bar:
        order = rng.permutation(train_idx)
        chosen_views = rng.integers(0, len(views), size=len(order))
        for start in range(0, len(order), params.batch_size):
            idx = order[start:start + params.batch_size]
            vs = chosen_views[start:start + params.batch_size]
            h = torch.from_numpy(np.stack([acts[v][i] for v, i in zip(vs, idx)]).astype(np.float32))
            model.train()
            if params.freeze_batchnorm:
                for m in model.modules():
                    if isinstance(m, nn.BatchNorm2d):
                        m.eval()
            out = model.forward_head(model.pool(model.forward_from(h, block)))
            loss = batch_loss(out, idx)
            optim.zero_grad()
            loss.backward()
            optim.step()
            sched.step()
        val_loss = float(nn.functional.cross_entropy(logits_of(split.valid, 0), y[split.valid]))
        bar.set_postfix(valid_loss=f"{val_loss:.3f}", best_epoch=best[1] + 1)
        if val_loss < best[0]:
            best = (val_loss, epoch, copy.deepcopy(trainable.state_dict()))
        elif epoch - best[1] >= params.patience:
            break
    bar.close()
    trainable.load_state_dict(best[2])
    info = {"best_epoch": best[1] + 1, "epochs_run": epoch + 1, "train_blocks": params.train_blocks,
            "best_valid_loss": round(best[0], 4), "tone_balance": params.tone_balance, "tone_views": params.tone_views,
            "jpeg_views": params.jpeg_views, "tone_decorrelation": params.tone_decorrelation}
    if params.input_size and params.input_size != task_preprocessing(model_name).input_size:
        info["input_size"] = params.input_size  # the card, the exports and the bundle screen at this size
    if return_model:
        for p in model.parameters():
            p.requires_grad_(True)
        return model.eval(), info
    test_views = views if config.tta else [0]
    logits_test = torch.stack([logits_of(split.test, v) for v in test_views]).mean(0).numpy()
    return FoldOutput(logits_test, logits_of(split.valid, 0).numpy(), info, model.eval() if keep_model else None)
