"""Cross-validation folds that keep every leakage group on one side: new ones, or the dataset authors' own."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np

from mpoxscan.errors import MpoxscanError


def assign_folds(labels: list[str], groups: list[str], n_folds: int, seed: int) -> list[int]:
    """Fold number (1..n_folds) per image: stratified by label, grouped by ``groups`` (scikit-learn's splitter)."""
    from sklearn.model_selection import StratifiedGroupKFold

    n_groups = len(set(groups))
    if n_folds < 2:
        raise MpoxscanError(f"--folds must be at least 2, got {n_folds}")
    if n_groups < n_folds:
        raise MpoxscanError(f"cannot make {n_folds} folds from {n_groups} patient groups: use --folds {max(2, n_groups)} or fewer")
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds = np.zeros(len(labels), dtype=int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class has fewer members than n_splits"
        for k, (_, test) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups), start=1):
            folds[test] = k
    return folds.tolist()


SPLITS = ("train", "valid", "test")


def read_official_folds(path: Path) -> tuple[list[str], dict[str, tuple[str, ...]]]:
    """A predefined-splits file in MSLD v2.0's ``folds.csv`` format: ``filename, ..., fold1..foldK`` where each
    fold column says Train, Valid or Test. Returns the fold names and, per file name, its split in each fold.

    MSLD v2.0's five official folds are five separate train/valid/test splits (each image is a test image in
    0 to 4 of them), not a partition, so they are kept as they are rather than turned into one fold number.
    """
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            fold_cols = [c for c in (reader.fieldnames or []) if c.lower().startswith("fold")]
            if "filename" not in (reader.fieldnames or []) or not fold_cols:
                raise MpoxscanError(f"{path}: expected columns filename, fold1..foldK (the MSLD v2.0 folds.csv format)")
            out: dict[str, tuple[str, ...]] = {}
            for line, row in enumerate(reader, start=2):
                splits = tuple(row[c].strip().lower() for c in fold_cols)
                if bad := [x for x in splits if x not in SPLITS]:
                    raise MpoxscanError(f"{path}:{line}: split '{bad[0]}' is not one of Train, Valid, Test")
                out[row["filename"]] = splits
            return fold_cols, out
    except FileNotFoundError:
        raise MpoxscanError(f"{path}: no such folds file") from None
    except UnicodeDecodeError:
        raise MpoxscanError(f"{path}: not a text CSV file") from None


def split_leaks(groups: list[str], splits: list[tuple[str, ...]], fold_names: list[str]) -> dict[str, list[str]]:
    """Per imported fold, the leakage groups that have images both in its test split and in its train/valid split."""
    leaks: dict[str, list[str]] = {}
    for f, name in enumerate(fold_names):
        sides: dict[str, set[str]] = {}
        for g, s in zip(groups, splits):
            sides.setdefault(g, set()).add("test" if s[f] == "test" else "fit")
        leaks[name] = sorted(g for g, seen in sides.items() if len(seen) > 1)
    return leaks
