"""`make model`: build the default model shipped inside the package, with its model card.

    python -m mpoxscan.deploy.bundle [--data ../shared/data] [--work runs/bundle] [--cases EXPORT]

The recipe is EfficientNet-Lite0 with its last five blocks fine-tuned (finetune), chosen and measured on the pooled
public data set (issue 26: six sources, 8 classes; benchmarks/pool_bench.py): trained here on every kept photo of
the pool (20 % of the groups held out for early stopping and the temperature). The screening threshold is the
operating point of the recipe's out-of-fold predictions on the pool's 5 grouped folds (95 % of hundreds of mpox
photos), not the held-out 20 %'s; the card describes exactly that threshold. The smallest variant that passes the
fidelity gate (int8, else fp16, else fp32) is written to src/mpoxscan/bundled/ with card.json and fidelity.json
(the fp32 model's outputs on the held-out images, so that a test can check the shipped file against them).

With ``--cases EXPORT`` (a folder written by `mpoxscan cases export`: expert-labelled cases, issue 30) the same
recipe is trained on the pool plus those cases. The cases are split apart for the held-out 20 % (so the pool's
held-out photos stay those the shipped model held out), the candidate is compared with the shipped model on those
photos, paired, and replaces it only if it passes the fidelity gate and is not worse (one-sided exact McNemar test,
p < 0.05) in accuracy, in mpox photos flagged or in look-alikes flagged. The card counts the cases it saw.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

from mpoxscan import __version__
from mpoxscan.deploy.fidelity import Gate

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "bundled"
REPO = Path(__file__).resolve().parents[3]
RECIPE = {"architecture": "efficientnet_lite0", "strategy": "finetune", "views": 4, "seed": 0, "options": {}}
POOL = "public"  # the shipped pool file (data/pools/public.toml)
POOL_FOLDS = 5
#: The cross-validations of exactly this recipe on the pool (benchmarks/pool_bench.py), by protocol.
POOL_RUNS = {"kfold": "finetune-kfold", "official": "finetune-official", "loso": "finetune-loso"}
POOL_RESULTS = REPO / "benchmarks" / "results" / "pool"
CASES_SOURCE = "expert"  # the source name of an export of expert-labelled cases in the curated pool
EXPORT_FORMAT = "mpoxscan-expert-cases/1"  # web/training_export.py FORMAT (deploy does not import web)
WORSE_P = 0.05  # a candidate with cases is refused when a one-sided paired test finds it worse at this level
PROTOCOL_NAMES = {
    "kfold": "the pool's 5 grouped folds, stratified by class and source",
    "official": "MSLD v2.0's official 5 splits (MSLD test photos), the other sources on the training side only",
    "loso": "leave one site out: each of MSLD, msid, viral-rash, hfmd, DermNet NZ tested by a model that never saw it",
}
DATASET = {"name": "The public pool: MSLD v2.0, MSLD v1, DermNet NZ (atlas), viral-rash-2024, MSID, hfmd-2025, "
                   "de-duplicated across sources (mpoxscan curate --pool public)",
           "licence": "MSLD: CC BY-NC 4.0 (non-commercial research use only); the other sources state no licence: "
                      "third-party web and atlas images, research use only, do not redistribute",
           "citation": "Ali et al., Mpox Skin Lesion Dataset v2.0, 2024; and the sources listed in ../shared/data"}
INTENDED_USE = ("A preliminary screening aid for skin lesions photographed with a phone: it says whether the photo "
                "looks like mpox enough to deserve a health worker's attention. Research and non-commercial use.")
LIMITS = [
    "Not a diagnosis and not a medical device: a negative answer does not rule mpox out.",
    "Trained on public web and atlas photos of 8 classes (mpox, chickenpox, cowpox, HFMD, measles, healthy skin, acne "
    "and other look-alike rashes in one class); any other skin condition is forced into one of them. Labels are the "
    "uploaders' folder names, not clinical diagnoses.",
    "Public images are mostly of typical presentations; accuracy on early lesions, mucosal lesions or unusual photos "
    "is unknown. The leave-one-site-out figures (cross_validated_metrics.protocols.loso) are the honest estimate for "
    "photos from a place the model never saw, and they are far worse than the k-fold ones: expect many more false "
    "alarms and missed mpox photos on photos unlike the pool's.",
    "Photos the model cannot judge get 'cannot tell' (too small, too dark, blurred, too compressed, not a skin "
    "close-up, unlike its training photos: answer_rule).",
    "The screening threshold flags 95 % of the mpox photos of the pool's out-of-fold predictions: it gives false "
    "positives by design; see the positive predictive values at 1, 10 and 30 % prevalence.",
]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pool_manifest(data: Path, folder: Path, cases: Path | None = None) -> Path:
    """Curate the pool (the shipped pool file, 5 grouped folds) into ``folder``; the manifest's path. The bundle
    and benchmarks/pool_bench.py curate it this one way, so that the card's figures describe the same rows.
    ``cases``: an export of expert-labelled cases, curated with the pool as one more source (lowest priority: a
    case photo that copies a public one is the copy dropped)."""
    from mpoxscan.data.curate import CurateOptions, curate, write_outputs
    from mpoxscan.data.sources import EXPERT_GROUP, Source, load_pool, pool_path

    sources, classes = load_pool(pool_path(POOL), Path(data).resolve())
    if cases is not None:
        # no label map: the export's folders are the taxonomy's class names, and curate refuses any other
        # apart: the cases cannot change how the public photos match one another (measured: without it, 131 cases
        # that copy viral-rash photos crowded one msid photo's copy out of its nearest pictures, and it was kept)
        sources.append(Source(CASES_SOURCE, check_export(cases), EXPERT_GROUP, priority=0, apart=True))
    opts = CurateOptions(n_folds=POOL_FOLDS, seed=0, progress=True, classes=classes)
    write_outputs(curate(sources, opts), Path(folder), opts, force=True)
    return Path(folder) / "manifest.csv"


def check_export(folder: Path) -> Path:
    """``folder`` resolved, when it is a complete export of `mpoxscan cases export`; else one line's SystemExit."""
    folder = Path(folder).resolve()
    try:
        record = json.loads((folder / "_meta" / "export.json").read_text())
    except (OSError, ValueError):
        raise SystemExit(f"{folder} is not a folder written by `mpoxscan cases export` (no readable "
                         "_meta/export.json)") from None
    if record.get("format") != EXPORT_FORMAT or record.get("state") != "complete":
        raise SystemExit(f"{folder}: an export of format {record.get('format')!r} in state {record.get('state')!r}; "
                         f"expected a complete {EXPORT_FORMAT} export (rerun `mpoxscan cases export` to finish it)")
    return folder


def expert_case_counts(manifest: Path, export: Path) -> dict:
    """What the card says of the expert-labelled cases a model saw: photos and cases kept (copies of public
    photos are dropped by curate), per class, and how many of those cases a test confirmed."""
    from collections import Counter

    from mpoxscan.data.manifest import read_manifest

    rows = [r for r in read_manifest(manifest) if r.source == CASES_SOURCE]
    kept = [r for r in rows if r.status == "kept"]
    case_of = {r.group for r in kept}
    confirmed = 0
    with open(Path(export) / "_meta" / "cases.jsonl") as fh:
        for line in fh:
            entry = json.loads(line) if line.strip() else {}
            confirmed += bool(entry.get("confirmed")) and f"{CASES_SOURCE}:{entry.get('case')}" in case_of
    return {"photos": len(kept), "cases": len(case_of), "confirmed_cases": confirmed,
            "per_class": dict(sorted(Counter(r.label for r in kept).items())),
            "dropped": dict(sorted(Counter(r.status for r in rows if r.status != "kept").items())),
            "note": "photos sent to the service with the person's training consent and labelled by an expert "
                    "(mpoxscan cases export); the cross-validated figures were measured on the public pool without them"}


def compare_models(labels, positive: str, candidate: tuple, shipped: tuple) -> dict:
    """Two models' answers on the same photos: ``candidate`` and ``shipped`` are each (classes, probabilities
    (N, classes), screening threshold). Accuracy (argmax), mpox photos flagged and look-alikes flagged, each with the
    exact McNemar test on the photos (``p_first_worse``: that the candidate is worse); ``worse`` lists the figures
    where it is, at p < WORSE_P."""
    from mpoxscan.evaluation.metrics import paired_screening

    labels = np.asarray(labels)
    said = []
    for classes, p, threshold in (candidate, shipped):
        said.append((np.asarray(classes)[np.asarray(p).argmax(1)] == labels,
                     np.asarray(p)[:, list(classes).index(positive)] >= threshold))
    (c_ok, c_flag), (s_ok, s_flag) = said
    mpox = labels == positive
    tests = paired_screening(mpox, (c_ok, s_ok), (c_flag, s_flag))
    figures = {  # (the test of the good outcome, the candidate's and the shipped model's figure)
        "accuracy": ("accuracy", c_ok, s_ok),
        "mpox_flagged": ("mpox_flagged", c_flag[mpox], s_flag[mpox]),
        "look_alikes_flagged": ("look_alikes_not_flagged", c_flag[~mpox], s_flag[~mpox]),  # fewer flagged is better
    }
    out: dict = {"photos": int(len(labels)), "mpox_photos": int(mpox.sum())}
    for name, (test, a, b) in figures.items():
        out[name] = {"candidate": float(a.mean()) if len(a) else None, "shipped": float(b.mean()) if len(b) else None,
                     **tests[test]}
    out["worse"] = [n for n in figures if out[n]["p_first_worse"] < WORSE_P]
    return out


def compared_with_shipped(candidate, held: list, images: np.ndarray, package: Path = PACKAGE_DIR) -> dict:
    """:func:`compare_models` of ``candidate`` and the model in ``package``, on the public photos of ``held`` (the
    candidate's held-out rows, ``images`` preprocessed) that the shipped model held out too (its fidelity.json)."""
    from mpoxscan.deploy.export import outputs_of
    from mpoxscan.deploy.runtime import Screener

    try:
        shipped = Screener(package / "model.onnx")
        theirs = {e["sha256"] for e in json.loads((package / "fidelity.json").read_text())["images"]}
    except (OSError, ValueError, KeyError) as exc:
        raise SystemExit(f"no shipped model to compare the candidate with in {package} ({exc}): build without "
                         "--cases first") from None
    if shipped.preprocessing != candidate.preprocessing:
        raise SystemExit("the shipped model preprocesses photos differently from the candidate: compare them with "
                         "benchmarks instead")
    both = [k for k, r in enumerate(held) if r.source != CASES_SOURCE and r.sha256 in theirs]
    if not both:
        raise SystemExit("the candidate and the shipped model held out no photo in common: nothing to compare on")

    def answers(model) -> tuple:
        return model.classes, outputs_of(model, images[both])["probabilities"], model.threshold

    return {**compare_models([held[k].label for k in both], candidate.positive_class, answers(candidate),
                             answers(shipped)),
            "shipped_sha256": _sha256(package / "model.onnx"), "shipped_held_out": len(theirs)}


#: Benchmarks of the shipped model call this to find its held-out photos.
training_manifest = pool_manifest


def shipped_operating_point(folder: Path = POOL_RESULTS) -> dict:
    """The threshold the bundle ships: from the recipe's pooled out-of-fold predictions on the pool's k folds."""
    from mpoxscan.evaluation.operating import operating_point, read_predictions

    path = folder / POOL_RUNS["kfold"] / "oof_predictions.csv"
    if not path.exists():
        raise SystemExit(f"{path} is missing: run benchmarks/pool_bench.py --only kfold first (the shipped threshold "
                         "is chosen on its out-of-fold predictions)")
    point = operating_point(read_predictions(path))
    return {**point, "source": str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)}


def pool_estimates(threshold: float, folder: Path = POOL_RESULTS, recipe: dict = RECIPE) -> dict:
    """The recipe's cross-validated figures on the pool, every one at the shipped ``threshold``: per protocol the
    fold accuracies, the pooled figures with group-level bootstrap intervals, per class the share flagged positive,
    the PPV at 1, 10 and 30 % prevalence; for leave-one-site-out also each site's answers under the whole rule. A
    run of another recipe is an error, not a silent substitute."""
    from mpoxscan.evaluation.operating import figures_at, read_predictions
    from mpoxscan.training.cv import resolved_options

    wanted = resolved_options(recipe["strategy"], recipe["options"])
    protocols = {}
    for protocol, name in POOL_RUNS.items():
        path = folder / name / "results.json"
        if not path.exists():
            continue
        results = json.loads(path.read_text())
        measured = {k: v for k, v in results["config"]["extra"].items() if k != "cache"}
        if (results["config"]["strategy"] != recipe["strategy"]
                or resolved_options(recipe["strategy"], measured) != wanted):
            raise SystemExit(f"{path} measured another recipe ({results['config']['strategy']} {measured}), "
                             f"not {recipe['strategy']} {recipe['options']}")
        model = results["models"][recipe["architecture"]]
        at = figures_at(read_predictions(folder / name / "oof_predictions.csv"), threshold)
        entry = {"protocol": PROTOCOL_NAMES[protocol], "source": str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path),
                 "folds": {f["fold"]: {"accuracy": round(f["metrics"]["accuracy"], 4),
                                       "mpox_auc": (f["metrics"].get("screening") or {}).get("auc"),
                                       "n_test": f["info"]["n_test"]} for f in model["folds"]},
                 "accuracy_over_folds": {k: round(model["summary"]["accuracy"][k], 4) for k in ("mean", "sd")},
                 "at_shipped_threshold": at}
        if model.get("tone"):
            entry["skin_tone"] = model["tone"]
        if model.get("answers"):
            entry["answers_per_site"] = model["answers"]["per_fold"]
            entry["answers_note"] = ("each site's photos answered by the fold's own exported file (fp32) with the "
                                     "whole answer rule fitted on the other sites' photos, its threshold from its own "
                                     "inner validation: flagged = positive, cannot tell = refused")
        protocols[protocol] = entry
    return {"threshold": threshold, "protocols": protocols,
            "note": "Estimates of the recipe (the same training on other splits of the pool), not scores of this file: "
                    "this file was trained on all of these photos. Every pooled figure is at the shipped threshold; "
                    "intervals are 95 % group-level bootstrap intervals (copies and patients drawn together)."}


def _option_values(recipe: dict) -> dict[str, tuple]:
    """Each option of the recipe's strategy: (its default, the recipe's value). Every option counts, not only those
    the recipe sets, so that a checkpoint trained with an option is not shipped under a recipe without it."""
    import dataclasses

    from mpoxscan.training.cv import options_types

    params = options_types().get(recipe["strategy"])  # the registry cv checks options against
    if params is None:
        return {}
    fields = dataclasses.fields(params)
    chosen = recipe["options"].get(recipe["strategy"], {})
    return {f.name: (f.default, chosen.get(f.name, f.default)) for f in fields}


def checkpoint_recipe_differs(card: dict, recipe: dict = RECIPE) -> str:
    """What differs between a checkpoint's card and the recipe ("" when nothing): a checkpoint of another recipe
    must not be shipped under this one's cross-validated figures."""
    trained = card.get("training", {})
    wanted = {"architecture": (card.get("architecture"), recipe["architecture"]),
              "strategy": (card.get("strategy"), recipe["strategy"]),
              "views": (trained.get("views"), recipe["views"]), "seed": (trained.get("seed"), recipe["seed"])}
    wanted |= {k: (trained.get(k, default), v) for k, (default, v) in _option_values(recipe).items()}
    return ", ".join(f"{k} {got!r} instead of {want!r}" for k, (got, want) in wanted.items() if got != want)


def build(data: Path, work: Path, gate: Gate = Gate(), reuse_checkpoint: bool = False, cases: Path | None = None) -> dict:
    import torch

    from mpoxscan.deploy.export import export, outputs_of
    from mpoxscan.deploy.runtime import Screener
    from mpoxscan.errors import MpoxscanError
    from mpoxscan.images import load_image
    from mpoxscan.data.manifest import kept_rows, same_training_data
    from mpoxscan.explain.attribution import gradcam_maps
    from mpoxscan.data.splits import training_split
    from mpoxscan.training.train import load_checkpoint, train

    data, work = Path(data).resolve(), Path(work)
    point = shipped_operating_point()  # first: without the pool's cross-validation there is nothing to ship
    manifest = pool_manifest(data, work / "pool", cases)
    apart = (CASES_SOURCE,) if cases is not None else ()
    if other := rows_differ(manifest, ignore=apart):
        raise SystemExit(f"the pool curated here is not the one benchmarks/results/pool measured ({other}): run "
                         "benchmarks/pool_bench.py on this pool first, so that the card describes what ships")
    if reuse_checkpoint and (work / "checkpoint" / "model.pt").exists():
        _, card = load_checkpoint(work / "checkpoint")
        if not same_training_data(manifest, card["data"]) or card["training"].get("split_apart", []) != list(apart):
            raise SystemExit(f"{work / 'checkpoint'} was trained on another manifest: build without --reuse-checkpoint")
        other = checkpoint_recipe_differs(card)
        if other:
            raise SystemExit(f"{work / 'checkpoint'} was trained with another recipe ({other}): build without "
                             "--reuse-checkpoint")
    else:
        card = train(manifest, RECIPE["architecture"], RECIPE["strategy"], work / "checkpoint", views=RECIPE["views"],
                     seed=RECIPE["seed"], force=True, options=RECIPE["options"], apart=apart)
    exported = work / "export"
    report, rejected = None, {}
    for precisions in (["fp32", "int8"], ["fp32", "fp16"], ["fp32"]):  # the smallest variant that passes the gate
        try:
            # 256 calibration images, not the CLI's 64: with eight classes, 64 gave eight photos a class, and the
            # activation ranges int8 is calibrated to then miss the rarer classes' extremes.
            report = export(work / "checkpoint", exported, precisions, manifest, gate, force=True,
                            screening_threshold=point["threshold"], n_calibration=256)
            break
        except MpoxscanError as exc:
            print(f"{precisions[-1]} not bundled: {exc}", flush=True)
            failed = json.loads((exported / "export.json").read_text())
            rejected[precisions[-1]] = failed["variants"][precisions[-1]]
            if precisions[-1] == "int8":  # which candidate failed, and how close each came on the training images
                rejected["int8"]["int8_selection"] = failed.get("int8_selection")
    assert report is not None
    chosen = [p for p in ("int8", "fp16", "fp32") if "file" in report["variants"].get(p, {})][0]
    rows = kept_rows(manifest)
    held = [rows[k] for k in training_split(rows, card["training"]).valid]
    ref = Screener(exported / "model.fp32.onnx")
    images = np.stack([ref.preprocessing(load_image(r.path, min_side=ref.input_size)) for r in held])
    expert = None
    if cases is not None:  # the candidate against the shipped model, on the pool photos both held out
        expert = expert_case_counts(manifest, cases)
        expert["comparison"] = compared_with_shipped(Screener(exported / f"model.{chosen}.onnx"), held, images)
        (work / "comparison.json").write_text(json.dumps(expert["comparison"], indent=2) + "\n")
        if worse := expert["comparison"]["worse"]:
            raise SystemExit(f"not shipped: the model trained with {expert['photos']} expert-labelled photos is worse "
                             f"than the shipped one in {', '.join(worse)} on {expert['comparison']['photos']} held-out "
                             f"photos (one-sided McNemar p < {WORSE_P}; {work / 'comparison.json'})")
    PACKAGE_DIR.mkdir(exist_ok=True)
    target = PACKAGE_DIR / "model.onnx"
    shutil.copyfile(exported / f"model.{chosen}.onnx", target)

    # The fp32 reference on the held-out images: what the test compares the shipped file with.
    out_ref = outputs_of(ref, images)
    p_ref = out_ref["probabilities"]
    # captum's Grad-CAM of the fp32 answer on the PyTorch model: what the shipped file's on-device map must match.
    model, _ = load_checkpoint(work / "checkpoint")
    cams = np.concatenate([gradcam_maps(model, torch.from_numpy(images[k:k + 16]),
                                        torch.from_numpy(p_ref[k:k + 16].argmax(1))).detach().numpy()
                           for k in range(0, len(images), 16)])
    fidelity = {"reference": "fp32, offtask, quality: outputs of the fp32 ONNX export of the same checkpoint; gradcam: "
                              "captum LayerGradCam of the PyTorch checkpoint for the fp32 answer (last feature map)", "images": [
        {"path": Path(r.path).relative_to(data).as_posix(), "sha256": r.sha256, "label": r.label,
         "fp32": [round(float(x), 6) for x in p], "gradcam": np.round(c, 5).tolist(),
         "offtask": round(float(o), 5), "quality": [round(float(x), 5) for x in q]}
        for r, p, c, o, q in zip(held, p_ref, cams, out_ref["offtask"], out_ref["quality"])]}
    (PACKAGE_DIR / "fidelity.json").write_text(json.dumps(fidelity, indent=1) + "\n")

    variants = {p: {k: v for k, v in e.items() if k != "failures" or v} for p, e in report["variants"].items()}
    model_card = {
        "name": f"mpoxscan-{RECIPE['architecture']}-{RECIPE['strategy']}",
        "file": target.name, "sha256": _sha256(target), "bytes": target.stat().st_size, "precision": chosen,
        "mpoxscan_version": __version__,
        "architecture": card["architecture"], "strategy": card["strategy"], "classes": card["classes"],
        "positive_class": card["positive_class"], "screening_threshold": point["threshold"],
        "operating_point": point,
        "answer_rule": Screener(target).rule.as_dict(),
        "temperature": card["temperature"], "preprocessing": card["preprocessing"],
        "data": {**DATASET, "images": card["data"]["images"], "per_class": _class_counts(manifest),
                 "manifest_sha256": card["data"]["manifest_sha256"], "rows_sha256": card["data"].get("rows_sha256")},
        "recipe": {**RECIPE, **{k: v for k, v in card["training"].items() if k != "seconds"}},
        "held_out_metrics": {k: card["validation_metrics"][k] for k in ("accuracy", "balanced_accuracy", "macro_f1")}
        | {"note": f"on the {card['training']['images_valid']} held-out photos that chose the epoch and the "
                   "temperature: optimistic; its screening figures are at that split's own threshold, not the "
                   "shipped one, so they are not repeated here"},
        "cross_validated_metrics": pool_estimates(point["threshold"]),
        "fidelity": {"gate": gate.__dict__, "variants": variants, "int8_selection": report.get("int8_selection")},
        "intended_use": INTENDED_USE, "limitations": LIMITS,
    }
    if rejected:
        model_card["fidelity"]["rejected"] = rejected
    if expert is not None:
        model_card["data"]["expert_cases"] = expert
    (PACKAGE_DIR / "card.json").write_text(json.dumps(model_card, indent=2) + "\n")
    return model_card


def rows_differ(manifest: Path, folder: Path = POOL_RESULTS, ignore: tuple[str, ...] = ()) -> str:
    """How the kept rows of ``manifest`` differ from the photos of the pool's k-fold run (its out-of-fold predictions
    hold each photo's checksum, label and group): "" when they are the same photos, labels and groups. ``ignore``:
    sources left out of the comparison (expert cases added to the pool), and then groups too: a case that copies a
    public photo may rename that photo's group."""
    import csv

    from mpoxscan.data.manifest import kept_rows

    with open(folder / POOL_RUNS["kfold"] / "oof_predictions.csv", newline="") as fh:
        measured = {(r["sha256"], r["label"], r["group"]) for r in csv.DictReader(fh) if r["variant"] == "main"}
    here = {(r.sha256, r.label, r.group) for r in kept_rows(manifest) if r.source not in ignore}
    if ignore:
        here, measured = {t[:2] for t in here}, {t[:2] for t in measured}
    if here == measured:
        return ""
    return f"{len(here - measured)} photos here not in the run, {len(measured - here)} in the run not here"


def _class_counts(manifest: Path) -> dict[str, int]:
    from collections import Counter

    from mpoxscan.data.manifest import kept_rows

    return dict(sorted(Counter(r.label for r in kept_rows(manifest)).items()))


def refresh_card_estimates(package: Path = PACKAGE_DIR, folder: Path = POOL_RESULTS) -> dict:
    """Rewrite only ``cross_validated_metrics`` of the shipped card: they describe the recipe (measured by cv runs
    of it), not the file, so a new run of the same recipe updates them without rebuilding the model."""
    path = package / "card.json"
    card = json.loads(path.read_text())
    recipe = {k: card["recipe"].get(k, RECIPE[k]) for k in ("architecture", "strategy")} | {
        "options": card["recipe"].get("options", {})}
    if recipe["architecture"] != RECIPE["architecture"] or recipe["strategy"] != RECIPE["strategy"]:
        raise SystemExit(f"{path} describes {recipe['architecture']} {recipe['strategy']}, not the recipe in bundle.py")
    card["cross_validated_metrics"] = pool_estimates(card["screening_threshold"], folder, recipe)
    from mpoxscan.deploy.quantize import INT8_CANDIDATES

    selection = card.get("fidelity", {}).get("int8_selection")
    if selection and selection.get("chosen") in INT8_CANDIDATES:  # the chosen settings described as the code does now
        selection["settings"] = INT8_CANDIDATES[selection["chosen"]].describe()
    path.write_text(json.dumps(card, indent=2) + "\n")
    return card


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bundle")
    parser.add_argument("--reuse-checkpoint", action="store_true",
                        help="export the checkpoint a previous build left in --work again, without training (after a "
                             "change to export, quantization or the answer rule)")
    parser.add_argument("--cases", type=Path, metavar="EXPORT",
                        help="also train on the expert-labelled cases of this folder (written by `mpoxscan cases "
                             "export`); the result replaces the shipped model only if it is not worse on the photos "
                             "both held out")
    parser.add_argument("--card-only", action="store_true",
                        help="only refresh the card's cross-validated figures from benchmarks/results/pool (after a new "
                             "pool_bench run of the same recipe), at the shipped threshold, and the chosen int8 settings' "
                             "description; the model file is not touched")
    args = parser.parse_args()
    if args.card_only:
        card = refresh_card_estimates()
        print(f"wrote {PACKAGE_DIR / 'card.json'}: cross-validated figures from "
              f"{', '.join(card['cross_validated_metrics'].get('protocols', {})) or 'no run'}")
        return
    card = build(args.data, args.work, reuse_checkpoint=args.reuse_checkpoint, cases=args.cases)
    print(f"wrote {PACKAGE_DIR / card['file']} ({card['precision']}, {card['bytes'] / 1e6:.2f} MB) and its card")


if __name__ == "__main__":
    main()
