"""`mpoxscan cv`: every model on every fold, each fold saved as it finishes, so that a killed run resumes."""

from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mpoxscan.data.manifest import kept_rows, manifest_digest  # noqa: F401  (re-exported: older imports)
from mpoxscan.data.splits import FoldSplit, group_leaks, make_splits  # noqa: F401
from mpoxscan.errors import MpoxscanError
from mpoxscan.evaluation.metrics import POSITIVE, classification_metrics, screening_threshold
from mpoxscan.numeric import softmax
from mpoxscan.training.calibration import fit_temperature
from mpoxscan.training.outputs import FoldOutput


@dataclass
class CVConfig:
    manifest: str
    models: list[str]
    strategy: str
    protocol: str  # "kfold" (the manifest's fold column) or "official" (its imported splits)
    views: int = 4  # augmented training views per image, besides the plain one
    tta: bool = False  # average the test predictions over the plain and augmented views
    seed: int = 0
    only_folds: list[str] | None = None  # run just these folds (for example ["fold1"]); None: all
    manifest_sha256: str = ""
    # Also export each fold's model (ONNX fp32 and these variants, int8 calibrated on the fold's training images)
    # and score the exported files on the fold's test images: the accuracy of what is shipped.
    exports: list[str] = field(default_factory=list)
    int8_settings: str = "auto"  # "auto": each fold measures every int8 candidate on its training images; or one name
    # Also export each fold's model (fp32) with the whole answer rule that ships (quality, compression and off-task
    # limits fitted on the fold's own photos, the fold's threshold) and record every test photo's answer: positive,
    # negative or cannot tell (predictions/answers/<stem>.csv). The leave-one-site-out figures are these.
    answers: bool = False
    extra: dict = field(default_factory=dict)


# One registry for `cv` and `train`: each strategy trains on split.train and selects on split.valid, and returns the
# fold's logits (cv) or, with return_model, (the trained network, its training facts) (train).
def _linear_fold(model: str, rows, split: FoldSplit, classes: list[str], config: CVConfig, progress: bool,
                 return_model: bool = False):
    from mpoxscan.training.linear import fit_on_split

    probe, feats = fit_on_split(model, rows, split, classes, config, progress)
    network = None
    if config.exports or config.answers or return_model:
        from mpoxscan.models import create_model
        from mpoxscan.training.linear import probe_into_model

        network = probe_into_model(create_model(model, pretrained=True), probe)
    if return_model:
        return network, {"C": probe.C_}
    test_views = list(feats) if config.tta else [0]
    # With TTA the logits of each view are averaged (a geometric mean of the softmax outputs).
    logits_test = np.mean([probe.decision_function(feats[v][split.test]) for v in test_views], axis=0)
    return FoldOutput(logits_test, probe.decision_function(feats[0][split.valid]), {"C": probe.C_}, network)


def _finetune_fold(model, rows, split, classes, config, progress, return_model=False):
    from mpoxscan.training.finetune import finetune_fold

    return finetune_fold(model, rows, split, classes, config, progress, return_model=return_model,
                         keep_model=bool(config.exports or config.answers))


def _full_fold(model, rows, split, classes, config, progress, return_model=False):
    from mpoxscan.training.full import full_fold

    return full_fold(model, rows, split, classes, config, progress, return_model=return_model,
                     keep_model=bool(config.exports or config.answers))


def _distill_fold(model, rows, split, classes, config, progress, return_model=False):
    from mpoxscan.training.distill import distill_fold

    return distill_fold(model, rows, split, classes, config, progress, return_model=return_model,
                        keep_model=bool(config.exports or config.answers))


STRATEGIES = {"linear": _linear_fold, "finetune": _finetune_fold, "full": _full_fold, "distill": _distill_fold}


def options_types() -> dict:
    """The typed options each strategy reads from ``CVConfig.extra[name]`` (frozen dataclasses)."""
    from mpoxscan.training.distill import DistillParams
    from mpoxscan.training.finetune import FinetuneParams
    from mpoxscan.training.full import FullParams

    return {"finetune": FinetuneParams, "full": FullParams, "distill": DistillParams}


#: The options each strategy reads (distill trains its student with full's).
STRATEGY_OPTIONS = {"linear": (), "finetune": ("finetune",), "full": ("full",), "distill": ("full", "distill")}


def resolved_options(strategy: str, extra: dict) -> dict:
    """Every option ``strategy`` reads, defaults filled in, as plain JSON: what a run records, so that a later change
    of a default cannot slip into the resumed folds of an earlier run."""
    types = options_types()
    return {name: json.loads(json.dumps(asdict(types[name].from_dict(extra.get(name)))))
            for name in STRATEGY_OPTIONS.get(strategy, ())}


#: Keys of ``CVConfig.extra`` besides the strategies' options.
EXTRA_SETTINGS = ("cache", "bootstrap")


def check_options(config: CVConfig) -> None:
    """Refuse unknown keys and bad values in ``config.extra`` before any training starts (a typo must not pass)."""
    types = options_types()
    unknown = set(config.extra) - set(types) - set(EXTRA_SETTINGS)
    if unknown:
        raise MpoxscanError(f"unknown setting(s) {', '.join(sorted(unknown))} (known: "
                            f"{', '.join([*types, *EXTRA_SETTINGS])})")
    for name, cls in types.items():
        if name in config.extra:
            params = cls.from_dict(config.extra[name])  # refuses unknown names, then the dataclass checks values
            if name == "distill":
                params.teacher_specs()


def fit_calibration(logits_valid: np.ndarray, y_valid: np.ndarray, classes: list[str]) -> tuple[float, float]:
    """(temperature, screening threshold for 95 % mpox sensitivity), both from inner-validation logits."""
    temperature = fit_temperature(logits_valid, y_valid)
    if POSITIVE not in classes:
        return temperature, 0.5
    p_val = softmax(logits_valid, temperature)
    return temperature, screening_threshold(y_valid == classes.index(POSITIVE), p_val[:, classes.index(POSITIVE)])


def _write_fold(out: Path, stem: str, rows, split: FoldSplit, classes, proba: np.ndarray, info: dict,
                indices: list[int] | None = None) -> None:
    """The predictions of ``split.test`` (or of ``indices``) and the fold's facts, the CSV last."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{stem}.csv.tmp"
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "sha256", "group", "label"] + [f"p_{c}" for c in classes])
        for k, p in zip(split.test if indices is None else indices, proba):
            w.writerow([rows[k].path, rows[k].sha256, rows[k].group, rows[k].label] + [f"{x:.6f}" for x in p])
    (out / f".{stem}.json.tmp").write_text(json.dumps(info, indent=2))
    (out / f".{stem}.json.tmp").replace(out / f"{stem}.json")
    tmp.replace(out / f"{stem}.csv")  # the CSV last: its presence means the fold is complete


def read_fold(out: Path, stem: str, classes: list[str]) -> tuple[list[str], np.ndarray, dict] | None:
    """A finished fold's labels, probabilities and facts (None while it is not finished)."""
    got = read_fold_keys(out, stem, classes)
    return None if got is None else got[:3]


def read_fold_keys(out: Path, stem: str, classes: list[str]) \
        -> tuple[list[str], np.ndarray, dict, list[tuple[str, str]]] | None:
    """:func:`read_fold` plus each row's (sha256, path), from the one reading of the CSV."""
    csv_path, json_path = out / f"{stem}.csv", out / f"{stem}.json"
    if not (csv_path.exists() and json_path.exists()):
        return None
    with open(csv_path, newline="") as fh:
        data = list(csv.DictReader(fh))
    labels = [d["label"] for d in data]
    proba = np.array([[float(d[f"p_{c}"]) for c in classes] for d in data]) if data else np.zeros((0, len(classes)))
    return labels, proba, json.loads(json_path.read_text()), [(d["sha256"], d["path"]) for d in data]


@dataclass
class OutOfFold:
    """A model's pooled out-of-fold predictions, one entry per test image, with each fold's threshold."""

    sha256: list[str]
    path: list[str]
    fold: list[str]
    labels: list[str]
    proba: np.ndarray
    threshold: np.ndarray
    ita: list[float | None]


def out_of_fold(out: Path, strategy: str, model: str, classes: list[str], splits: list[FoldSplit],
                rows: list[ManifestRow]) -> OutOfFold | None:
    """The finished folds' test predictions of ``model``, joined (by checksum) to the manifest rows' skin tone."""
    from mpoxscan.data.manifest import row_ita

    tone = {r.sha256: row_ita(r) for r in rows}
    parts = []
    for split in splits:
        stem = f"{model}__{strategy}__{split.name}"
        got = read_fold_keys(out / "predictions", stem, classes)
        if got is None:
            continue
        parts.append((split.name, got[3], got[:3]))
    if not parts:
        return None
    keys = [k for _, ks, _ in parts for k in ks]
    return OutOfFold(sha256=[k[0] for k in keys], path=[k[1] for k in keys],
                     fold=[name for name, ks, _ in parts for _ in ks], labels=[lab for _, _, g in parts for lab in g[0]],
                     proba=np.concatenate([g[1] for _, _, g in parts]),
                     threshold=np.concatenate([np.full(len(g[0]), g[2]["threshold"]) for _, _, g in parts]),
                     ita=[tone.get(k[0]) for k in keys])


def fold_done(out: Path, config: CVConfig, classes: list[str], model: str, split: FoldSplit) -> bool:
    """Whether a (model, fold) task has written everything it writes (a killed run redoes only the others)."""
    pred_dir, stem = out / "predictions", f"{model}__{config.strategy}__{split.name}"
    return (read_fold(pred_dir, stem, classes) is not None
            and all(read_fold(pred_dir, f"{stem}__onnx-{p}", classes) is not None for p in _export_names(config))
            and (not config.exports or (out / "models" / f"{stem}.fp32.onnx").exists())
            and (not config.answers or (pred_dir / "answers" / f"{stem}.csv").exists()))


def run_fold(out: Path, config: CVConfig, rows, classes: list[str], model: str, split: FoldSplit) -> None:
    """Train one model on one fold and write its predictions (and its exports) into the run folder: one task, the
    same in this process and as a Ray task."""
    pred_dir, stem = out / "predictions", f"{model}__{config.strategy}__{split.name}"
    started = time.perf_counter()
    result = STRATEGIES[config.strategy](model, rows, split, classes, config, progress=False)
    y_val = np.array([classes.index(rows[k].label) for k in split.valid])
    temperature, threshold = fit_calibration(result.logits_valid, y_val, classes)
    info = {**result.info, "temperature": temperature, "threshold": threshold,
            "seconds": round(time.perf_counter() - started, 2), "n_train": len(split.train),
            "n_valid": len(split.valid), "n_test": len(split.test), "group_leaks": group_leaks(rows, split),
            "uncalibrated_ece": classification_metrics([rows[k].label for k in split.test],
                                                       softmax(result.logits_test), classes)["ece"]}
    # The inner-validation photos' calibrated predictions too (predictions/valid/): what each fold's post-hoc
    # choices were fitted on, so that an analysis can fit its own the same way (benchmarks/tone_bench.py).
    _write_fold(pred_dir / "valid", stem, rows, split, classes, softmax(result.logits_valid, temperature), info,
                indices=split.valid)
    for suffix, (z_test, z_valid) in result.extra_outputs.items():  # before the main file: it marks done
        t, th = fit_calibration(z_valid, y_val, classes)
        _write_fold(pred_dir, f"{stem}__{suffix}", rows, split, classes, softmax(z_test, t),
                    {**info, "temperature": t, "threshold": th, "variant": suffix})
    _write_fold(pred_dir, stem, rows, split, classes, softmax(result.logits_test, temperature), info)
    if config.exports:
        _write_exports(pred_dir, stem, model, config, rows, split, classes, result.model, info)
    if config.answers:
        _write_answers(pred_dir, stem, model, config, rows, split, classes, result.model, info)


def _setting(value) -> str:
    """A setting as the refusal of another run's folder names it (None: not set)."""
    if value is None:
        return "not set"
    if isinstance(value, str) and len(value) == 64:  # a checksum
        return value[:12] + "..."
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def _resolved_or_raw(old: dict) -> dict:
    """An earlier run's options with today's defaults filled in; {} where they no longer parse (then they differ)."""
    try:
        return resolved_options(old.get("strategy", ""), old.get("extra", {}))
    except (MpoxscanError, TypeError):
        return {}


def run_cv(config: CVConfig, out: Path, progress: bool = True, ray_address: str | None = None) -> dict:
    """Run (or resume) a cross-validation; returns and writes ``results.json``. ``ray_address``: run the (model,
    fold) tasks on Ray ("local": on this machine; else a cluster's address) instead of one after another here."""
    from tqdm import tqdm

    from mpoxscan.models import get_spec

    if config.strategy not in STRATEGIES:
        raise MpoxscanError(f"unknown strategy '{config.strategy}' (known: {', '.join(STRATEGIES)})")
    check_options(config)
    config.extra = {**config.extra, **resolved_options(config.strategy, config.extra)}
    for m in config.models:
        get_spec(m)
    manifest = Path(config.manifest)
    rows = kept_rows(manifest)
    config.manifest_sha256 = manifest_digest(manifest)
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / "config.json"
    if cfg_path.exists():
        old = json.loads(cfg_path.read_text())
        same = {k: old.get(k) for k in ("manifest_sha256", "strategy", "protocol", "views", "tta", "seed")}
        new = {k: asdict(config)[k] for k in same}
        # The strategies' options too: folds trained at another input size or epoch count must not be mixed.
        # A run written before runs recorded every option (2026-11-27) is compared with today's defaults filled in.
        same |= {n: old.get("extra", {}).get(n) for n in options_types()} | _resolved_or_raw(old)
        new |= {n: json.loads(json.dumps(config.extra.get(n))) for n in options_types()}  # tuples as JSON lists
        if same != new:
            differ = ", ".join(f"{k} {_setting(same[k])} there, {_setting(new[k])} now" for k in same if same[k] != new[k])
            raise MpoxscanError(f"{out} holds a run with other settings ({differ}): choose another --out")
        config.models = list(dict.fromkeys(old.get("models", []) + config.models))
    cfg_path.write_text(json.dumps(asdict(config), indent=2))

    classes = sorted({r.label for r in rows})
    splits = make_splits(rows, config.protocol, config.seed)
    if config.only_folds:
        unknown = set(config.only_folds) - {s.name for s in splits}
        if unknown:
            raise MpoxscanError(f"unknown fold(s) {', '.join(sorted(unknown))} (this manifest has {', '.join(s.name for s in splits)})")
        splits = [s for s in splits if s.name in config.only_folds]
    tasks = [(m, s) for m in config.models for s in splits]
    pending = [(m, s) for m, s in tasks if not fold_done(out, config, classes, m, s)]
    with tqdm(total=len(tasks), initial=len(tasks) - len(pending), desc=f"cv {config.strategy}", unit="fold",
              disable=not progress) as bar:
        if ray_address is None:
            for model, split in pending:
                run_fold(out, config, rows, classes, model, split)
                bar.update()
        else:
            from mpoxscan.training.ray_cv import run_folds_on_ray

            run_folds_on_ray(ray_address, out, config, rows, classes, pending, run_fold, on_done=bar.update)
    results = summarise(out, config, classes, splits, rows)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    write_oof_predictions(out, config, classes, splits, rows)
    return results


def _variants(pred_dir: Path, stem: str) -> list[str]:
    """"" (the main predictions) and the suffixes of a fold's extra outputs saved beside them (not the exports)."""
    extra = sorted(p.stem[len(stem) + 2:] for p in pred_dir.glob(f"{stem}__*.csv"))
    return [""] + [v for v in extra if not v.startswith("onnx-")]


def oof_table(out: Path, config: CVConfig, classes: list[str], splits: list[FoldSplit], rows, model: str,
              variant: str = "") -> tuple[list[str], np.ndarray, list[str], np.ndarray, list[str]]:
    """The pooled out-of-fold predictions of one model and variant: labels, probabilities, patient groups, each
    image's screening threshold (its fold's) and fold names, over the folds that are done."""
    labels, probas, groups, thresholds, folds = [], [], [], [], []
    suffix = f"__{variant}" if variant else ""
    for split in splits:
        got = read_fold(out / "predictions", f"{model}__{config.strategy}__{split.name}{suffix}", classes)
        if got is None:
            continue
        fold_labels, proba, info = got
        labels += fold_labels
        probas.append(proba)
        groups += [rows[k].group for k in split.test]
        thresholds += [info["threshold"]] * len(fold_labels)
        folds += [split.name] * len(fold_labels)
    proba = np.concatenate(probas) if probas else np.zeros((0, len(classes)))
    return labels, proba, groups, np.array(thresholds, float), folds


def pooled_statistics(out: Path, config: CVConfig, classes: list[str], splits: list[FoldSplit], rows,
                      model: str) -> dict:
    """{variant: pooled_summary} over all out-of-fold predictions of ``model`` (95 % patient-level bootstrap CIs,
    pooled ECE, PPV at 1 % and 10 % prevalence); "main" is the run's own predictions."""
    from mpoxscan.evaluation.metrics import pooled_summary

    first = next((s for s in splits if read_fold(out / "predictions", f"{model}__{config.strategy}__{s.name}", classes)),
                 None)
    if first is None:
        return {}
    result = {}
    for variant in _variants(out / "predictions", f"{model}__{config.strategy}__{first.name}"):
        labels, proba, groups, thresholds, _ = oof_table(out, config, classes, splits, rows, model, variant)
        if labels:
            result[variant or "main"] = pooled_summary(labels, proba, classes, groups, thresholds,
                                                       n_boot=int(config.extra.get("bootstrap", 2000)), seed=config.seed)
    return result


def write_oof_predictions(out: Path, config: CVConfig, classes: list[str], splits: list[FoldSplit], rows) -> Path:
    """``out/oof_predictions.csv``: every out-of-fold prediction of the run (image, fold, true class, probabilities,
    the fold's threshold), per model and variant, so that any figure can be re-scored from it."""
    path = out / "oof_predictions.csv"
    tmp = out / ".oof_predictions.csv.tmp"
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "sha256", "group", "fold", "model", "strategy", "variant", "label", "threshold"]
                   + [f"p_{c}" for c in classes])
        for model in config.models:
            for split in splits:
                stem = f"{model}__{config.strategy}__{split.name}"
                for variant in _variants(out / "predictions", stem):
                    got = read_fold(out / "predictions", f"{stem}__{variant}" if variant else stem, classes)
                    if got is None:
                        continue
                    _, proba, info = got
                    for k, p in zip(split.test, proba):
                        r = rows[k]
                        w.writerow([f"{r.source}/{r.relpath}", r.sha256, r.group, split.name, model, config.strategy,
                                    variant or "main", r.label, f"{info['threshold']:.6f}"] + [f"{x:.6f}" for x in p])
    tmp.replace(path)
    return path


def _export_names(config: CVConfig) -> list[str]:
    return list(dict.fromkeys(["fp32", *config.exports])) if config.exports else []


def _write_exports(pred_dir: Path, stem: str, model_name: str, config: CVConfig, rows, split: FoldSplit, classes,
                   network, info: dict) -> None:
    """Score the ONNX exports of this fold's network on its test images (one predictions file per variant)."""
    import dataclasses

    from mpoxscan.deploy.export import split_variant_probabilities
    from mpoxscan.models.checkpoint import card_core
    from mpoxscan.training.features import preprocessing_for

    # A strategy may train at another size than the backbone's own (--input-size): the fold's files screen at it.
    prep = preprocessing_for(model_name, info.get("input_size"))
    card = card_core(model_name, config.strategy, classes, dataclasses.asdict(prep), info["temperature"],
                     info["threshold"])
    probas, facts = split_variant_probabilities(network, card, rows, split, _export_names(config), seed=config.seed,
                                                int8_settings=config.int8_settings)
    # The fold's fp32 model is kept (about 14 MB): the review gallery explains each test image with the model that
    # never saw it.
    from mpoxscan.deploy.quantize import save

    models_dir = pred_dir.parent / "models"
    models_dir.mkdir(exist_ok=True)
    save(facts["fp32"], models_dir / f"{stem}.fp32.onnx")
    for precision, proba in probas.items():
        _write_fold(pred_dir, f"{stem}__onnx-{precision}", rows, split, classes, proba,
                    {**info, "precision": precision, "bytes": facts["bytes"][precision],
                     "int8_selection": facts["int8_selection"] if precision == "int8" else None})


ANSWER_COLUMNS = ["path", "sha256", "group", "label", "answer", "reason", "p_positive", "threshold"]


def _write_answers(pred_dir: Path, stem: str, model_name: str, config: CVConfig, rows, split: FoldSplit, classes,
                   network, info: dict) -> None:
    """Every test photo's answer from the fold's own exported file with its whole answer rule (the CSV last)."""
    import dataclasses

    from mpoxscan.deploy.export import fold_answers
    from mpoxscan.models.checkpoint import card_core
    from mpoxscan.training.features import preprocessing_for

    prep = preprocessing_for(model_name, info.get("input_size"))
    card = card_core(model_name, config.strategy, classes, dataclasses.asdict(prep), info["temperature"],
                     info["threshold"])
    answers, rule = fold_answers(network, card, rows, split)
    folder = pred_dir / "answers"  # beside, not among, the predictions: an answers file is not a variant
    folder.mkdir(exist_ok=True)
    (folder / f"{stem}.json").write_text(json.dumps({"answer_rule": rule, "precision": "fp32"}, indent=2))
    tmp = folder / f".{stem}.csv.tmp"
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(ANSWER_COLUMNS)
        for k, a in zip(split.test, answers):
            w.writerow([rows[k].path, rows[k].sha256, rows[k].group, rows[k].label, a.answer, a.reason or "",
                        f"{a.positive_probability:.6f}", f"{a.threshold:.6f}"])
    tmp.replace(folder / f"{stem}.csv")


def read_answers(pred_dir: Path, stem: str) -> list[dict]:
    """A fold's recorded answers (empty when it has none)."""
    path = pred_dir / "answers" / f"{stem}.csv"
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


KEY_METRICS = ("accuracy", "balanced_accuracy", "macro_precision", "macro_recall", "macro_f1", "cohen_kappa",
               "macro_auc_ovr", "ece")


def _summarise_exports(out: Path, config: CVConfig, model: str, classes: list[str], splits: list[FoldSplit]) -> dict:
    """Per precision: accuracy and macro-F1 of the exported files over folds, and their top-1 agreement with
    the fp32 export (the folds where every variant was scored)."""
    from mpoxscan.deploy.fidelity import compare
    from mpoxscan.evaluation.metrics import mean_sd_ci

    names = _export_names(config)
    if not names:
        return {}
    per_fold: dict[str, list] = {p: [] for p in names}
    for split in splits:
        got = {p: read_fold(out / "predictions", f"{model}__{config.strategy}__{split.name}__onnx-{p}", classes) for p in names}
        if any(v is None for v in got.values()):
            continue
        ref = got["fp32"][1]
        for p, (labels, proba, info) in got.items():
            m = classification_metrics(labels, proba, classes, threshold=info["threshold"])
            agreement = compare(ref, proba)["agreement"]
            per_fold[p].append({"fold": split.name, "accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
                                "agreement_with_fp32": agreement, "bytes": info.get("bytes"),
                                "int8": (info.get("int8_selection") or {}).get("chosen")})
    return {p: {"folds": v, **{k: mean_sd_ci([f[k] for f in v]) for k in ("accuracy", "macro_f1", "agreement_with_fp32")}}
            for p, v in per_fold.items() if v}


def _summarise_answers(out: Path, config: CVConfig, model: str, splits: list[FoldSplit]) -> dict:
    """Per fold (a left-out site) and pooled over folds: per true class, the shares the shipped answer rule flagged
    positive and refused, with group-level bootstrap CIs (metrics.answer_shares)."""
    from mpoxscan.evaluation.metrics import answer_shares

    n_boot, per_fold, pooled = int(config.extra.get("bootstrap", 2000)), {}, []
    for split in splits:
        got = read_answers(out / "predictions", f"{model}__{config.strategy}__{split.name}")
        if got:
            per_fold[split.name] = answer_shares([a["label"] for a in got], [a["answer"] for a in got],
                                                 [a["group"] for a in got], n_boot, config.seed)
            pooled += got
    if not pooled:
        return {}
    return {"precision": "fp32", "per_fold": per_fold,
            "pooled": answer_shares([a["label"] for a in pooled], [a["answer"] for a in pooled],
                                    [a["group"] for a in pooled], n_boot, config.seed)}


def summarise(out: Path, config: CVConfig, classes: list[str], splits: list[FoldSplit], rows) -> dict:
    """Per-fold metrics, mean / sd / 95 % CI across folds, and the statistical comparison of the models."""
    from mpoxscan.evaluation.metrics import corrected_resampled_ttest, friedman, mean_sd_ci
    from mpoxscan.models import count_parameters

    models: dict[str, dict] = {}
    for model in config.models:
        folds = []
        for split in splits:
            got = read_fold(out / "predictions", f"{model}__{config.strategy}__{split.name}", classes)
            if got is None:
                continue
            labels, proba, info = got
            m = classification_metrics(labels, proba, classes, threshold=info["threshold"])
            m["uncalibrated_ece"] = info.get("uncalibrated_ece")
            folds.append({"fold": split.name, "info": info, "metrics": m})
        if not folds:
            continue
        summary = {k: mean_sd_ci([f["metrics"].get(k, float("nan")) for f in folds]) for k in KEY_METRICS}
        summary["uncalibrated_ece"] = mean_sd_ci([f["metrics"]["uncalibrated_ece"] for f in folds])
        for k in ("auc", "sensitivity", "specificity"):
            summary[f"screening_{k}"] = mean_sd_ci([f["metrics"].get("screening", {}).get(k, float("nan")) for f in folds])
        models[model] = {"parameters": count_parameters(model), "folds": folds, "summary": summary,
                         "confusion_matrix": np.sum([f["metrics"]["confusion_matrix"] for f in folds], axis=0).tolist()}
        models[model]["pooled"] = pooled_statistics(out, config, classes, splits, rows, model)
        oof = out_of_fold(out, config.strategy, model, classes, splits, rows)
        if any(v is not None for v in oof.ita):  # manifests curated before the ita column have no tones
            from mpoxscan.evaluation.metrics import tone_metrics

            # Pooled over folds, each test image screened at its own fold's threshold (as it would be).
            models[model]["tone"] = tone_metrics(oof.labels, oof.proba, classes, oof.ita, threshold=oof.threshold)
        exports = _summarise_exports(out, config, model, classes, splits)
        if exports:
            models[model]["exports"] = exports
        answers = _summarise_answers(out, config, model, splits)
        if answers:
            models[model]["answers"] = answers
    comparison: dict = {}
    complete = {m: v for m, v in models.items() if len(v["folds"]) == len(splits)}
    if len(complete) >= 2:
        acc = {m: [f["metrics"]["accuracy"] for f in v["folds"]] for m, v in complete.items()}
        best = max(acc, key=lambda m: np.mean(acc[m]))
        test_fraction = float(np.mean([len(s.test) / (len(s.test) + len(s.train) + len(s.valid)) for s in splits]))
        comparison = {"metric": "accuracy", "best": best, "test_fraction": test_fraction,
                      "versus": {m: corrected_resampled_ttest(acc[best], acc[m], test_fraction) for m in acc if m != best},
                      "friedman": friedman(acc)}
    return {"config": asdict(config), "classes": classes, "n_images": len(rows),
            "splits": [{"name": s.name, "train": len(s.train), "valid": len(s.valid), "test": len(s.test),
                        "group_leaks": group_leaks(rows, s)} for s in splits],
            "models": models, "comparison": comparison, "written": time.strftime("%Y-%m-%d %H:%M:%S"),
            "host_cpus": os.cpu_count()}
