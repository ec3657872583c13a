"""Re-score figures from the per-image predictions committed under benchmarks/results/, without the run folders
(`runs/` is not in the repository): the loaders turn a committed `oof_predictions.csv` (and, where it was committed,
the `valid_predictions.csv` beside it) into the (config, {fold: (test, valid)}) members that
`benchmarks/ensemble_bench.py`'s `score` reads, so that a single run and an ensemble are scored by the one code that
wrote the published figures. tests/test_doc_figures.py checks every figure the documentation quotes this way.

    PYTHONPATH=src:benchmarks .venv/bin/python -c "import rescore; print(rescore.score_runs(
        ['benchmarks/results/cv/finetune-10fold']))"
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _read(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _folds(rows: list[dict], classes: list[str]) -> dict[str, tuple]:
    """{fold: (labels, probabilities, {"threshold"}, [(sha256, image)])}: read_fold_keys' tuple, in the file's
    order (the order cv wrote each fold's photos)."""
    by_fold: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_fold[r["fold"]].append(r)
    return {fold: ([r["label"] for r in part], np.array([[float(r[f"p_{c}"]) for c in classes] for r in part]),
                   {"threshold": float(part[0]["threshold"])}, [(r["sha256"], r["image"]) for r in part])
            for fold, part in by_fold.items()}


def member(folder: str | Path, protocol: str | None = None, variant: str = "main",
           model: str = "efficientnet_lite0") -> tuple[dict, dict]:
    """One run as an ensemble_bench member, from ``folder``'s committed oof_predictions.csv (GPU results: one
    ``protocol`` of it) and valid_predictions.csv where it exists (valid is None in each fold otherwise)."""
    folder = REPO / folder
    pick = lambda r: (r["model"] == model and r["variant"] == variant  # noqa: E731
                      and (protocol is None or r.get("protocol") == protocol))
    test_rows = [r for r in _read(folder / "oof_predictions.csv") if pick(r)]
    if not test_rows:
        raise ValueError(f"{folder}: no predictions of {model} {variant} {protocol or ''}")
    classes = [k[2:] for k in test_rows[0] if k.startswith("p_")]
    tests = _folds(test_rows, classes)
    valid_path = folder / "valid_predictions.csv"
    valid_rows = _read(valid_path) if valid_path.exists() else []
    if valid_rows and "model" not in valid_rows[0]:
        # benchmarks/pool_bench.py's layout: one model per run, and each fold's threshold only in its test rows.
        rule = {fold: str(t[2]["threshold"]) for fold, t in tests.items()}
        valid_rows = [{**r, "image": r["path"], "threshold": rule[r["fold"]]} for r in valid_rows]
    else:
        valid_rows = [r for r in valid_rows if pick(r)]
    valids = _folds(valid_rows, classes) if valid_rows else {}
    # k-fold folds ("fold0", "fold1", ... "fold10") in their number's order; leave-one-site-out folds by site name.
    order = sorted(tests, key=lambda f: (0, int(f[4:]), "") if f[4:].isdigit() else (1, 0, f))
    config = {"classes": classes, "groups": {r["sha256"]: r["group"] for r in test_rows}}
    return config, {fold: (tests[fold], valids.get(fold)) for fold in order}


def groups_of(members: list[tuple[dict, dict]]) -> dict:
    """The ``rows_by_sha`` that ensemble_bench.score reads (only each photo's patient group is used)."""
    return {sha: SimpleNamespace(group=g) for m in members for sha, g in m[0]["groups"].items()}


def score(members: list[tuple[dict, dict]], n_boot: int = 2000) -> dict:
    """ensemble_bench.score of the members (one member: the run alone); ``n_boot`` 0 skips the pooled intervals."""
    import ensemble_bench

    return ensemble_bench.score(members, groups_of(members), n_boot=n_boot)


def fold_accuracy(m: tuple[dict, dict]) -> list[float]:
    """Each fold's accuracy (top class against the label), in fold order."""
    classes = m[0]["classes"]
    return [float(np.mean([classes[k] == y for k, y in zip(t[1].argmax(axis=1), t[0])])) for t, _ in m[1].values()]
