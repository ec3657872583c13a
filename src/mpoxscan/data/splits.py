"""Train / inner-validation / test indices of a manifest's kept rows: cross-validation folds and the final split.

Shared by `cv`, `train` and `export` (which recomputes a checkpoint's held-out patients), so it lives with the data.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

from mpoxscan.data.manifest import ManifestRow
from mpoxscan.errors import MpoxscanError


@dataclass
class FoldSplit:
    name: str
    train: list[int]
    valid: list[int]  # inner validation: hyperparameters, early stopping, temperature, threshold
    test: list[int]


PROTOCOLS = ("kfold", "official", "loso")


def _inner(rows: list[ManifestRow], rest: list[int], seed: int) -> tuple[list[int], list[int]]:
    """20 % of ``rest`` (whole leakage groups, stratified by label) for inner validation, the rest to fit."""
    from sklearn.model_selection import StratifiedGroupKFold

    inner = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=seed)
    fit_idx, val_idx = next(inner.split(np.zeros(len(rest)), [rows[k].label for k in rest], [rows[k].group for k in rest]))
    return [rest[k] for k in fit_idx], [rest[k] for k in val_idx]


def make_splits(rows: list[ManifestRow], protocol: str, seed: int) -> list[FoldSplit]:
    """Train / inner-validation / test indices per fold. Inner validation comes from the training side only.

    - ``official``: the imported splits (MSLD v2.0's five). Rows outside them (other sources of a pool) join every
      split's training side, except those in a leakage group with a photo of that split's valid or test side.
    - ``kfold``: the manifest's fold column; inner validation drawn from the other folds.
    - ``loso``: leave one site out: each site (a source, or sources of one place) is the test side once, every other
      site trains, minus the photos grouped with a test photo (a copy or the same patient)."""
    if protocol == "official":
        n = {len(r.splits.split(",")) for r in rows if r.splits}
        if not n:
            raise MpoxscanError("the manifest has no imported splits: curate it with --folds-from, or use the k-fold protocol")
        extra = [k for k, r in enumerate(rows) if not r.splits]
        out = []
        for f in range(max(n)):
            side = {k: r.splits.split(",")[f] for k, r in enumerate(rows) if r.splits}
            held = {rows[k].group for k, s in side.items() if s != "train"}
            out.append(FoldSplit(f"fold{f + 1}",
                                 [k for k, s in side.items() if s == "train"] + [k for k in extra if rows[k].group not in held],
                                 [k for k, s in side.items() if s == "valid"], [k for k, s in side.items() if s == "test"]))
        return out
    if protocol == "loso":
        sites = sorted({r.site or r.source for r in rows})
        if len(sites) < 2:
            raise MpoxscanError("leave-one-site-out needs a manifest of at least two sites (curate several sources)")
        out = []
        for site in sites:
            test = [k for k, r in enumerate(rows) if (r.site or r.source) == site]
            held = {rows[k].group for k in test}
            rest = [k for k, r in enumerate(rows) if (r.site or r.source) != site and r.group not in held]
            fit, valid = _inner(rows, rest, seed)
            out.append(FoldSplit(site, fit, valid, test))
        return out
    if protocol != "kfold":
        raise MpoxscanError(f"unknown protocol '{protocol}' (known: {', '.join(PROTOCOLS)})")
    folds = sorted({r.fold for r in rows if r.fold}, key=int)
    if len(folds) < 2:
        raise MpoxscanError("the manifest has no k-fold column: curate it without --folds-from, or use --protocol official")
    out = []
    for f in folds:
        test = [k for k, r in enumerate(rows) if r.fold == f]
        fit, valid = _inner(rows, [k for k, r in enumerate(rows) if r.fold and r.fold != f], seed)
        out.append(FoldSplit(f"fold{f}", fit, valid, test))
    return out


def group_leaks(rows: list[ManifestRow], split: FoldSplit) -> int:
    """Leakage groups on both sides of a split (0 for folds made by curate; possible in imported ones)."""
    fit = {rows[k].group for k in split.train + split.valid}
    return len(fit & {rows[k].group for k in split.test})


def inner_split(rows, seed: int, apart: Collection[str] = ()) -> FoldSplit:
    """All kept images: 80 % to fit, 20 % (whole patient groups, stratified) for early stopping and calibration.

    ``apart``: sources whose rows are split on their own (expert-labelled cases added to the pool, issue 30). The
    other rows then get exactly the split they get without them, so a model trained with the added rows and the model
    it would replace hold out the same photos and can be compared on them, paired. An added row in a group with other
    rows follows its group; fewer than 5 groups of added rows all go to the fitting side."""
    from sklearn.model_selection import StratifiedGroupKFold

    def split(idx: np.ndarray) -> tuple[list[int], list[int]]:
        fit, valid = next(StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=seed)
                          .split(idx, [rows[k].label for k in idx], [rows[k].group for k in idx]))
        return idx[fit].tolist(), idx[valid].tolist()

    added = np.array([r.source in apart for r in rows], bool)
    fit, valid = split(np.flatnonzero(~added))
    held = {rows[k].group for k in valid}
    seen = held | {rows[k].group for k in fit}
    joined = [k for k in np.flatnonzero(added) if rows[k].group in seen]
    alone = np.array([k for k in np.flatnonzero(added) if rows[k].group not in seen], int)
    fit += [k for k in joined if rows[k].group not in held]
    valid += [k for k in joined if rows[k].group in held]
    if len({rows[k].group for k in alone}) >= 5:
        more_fit, more_valid = split(alone)
        fit, valid = fit + more_fit, valid + more_valid
    else:
        fit += alone.tolist()
    fit, valid = sorted(fit), sorted(valid)
    return FoldSplit("final", fit, valid, valid)


def training_split(rows, training: dict) -> FoldSplit:
    """The inner split a checkpoint was trained with, from its card's "training" entry (seed, sources apart)."""
    return inner_split(rows, training.get("seed", 0), training.get("split_apart", ()))
