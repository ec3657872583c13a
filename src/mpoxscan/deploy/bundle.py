"""`make model`: build the default model shipped inside the package, with its model card.

    python -m mpoxscan.deploy.bundle [--data ../shared/data] [--work runs/bundle]

The recipe is the best mobile configuration of the cross-validation (benchmarks/results/cv): EfficientNet-Lite0,
its last five blocks fine-tuned, trained here on every kept image of MSLD v2.0 (20 % of the patients held out for
early stopping, temperature and the screening threshold). It is exported and the smallest variant that passes the
fidelity gate (int8, else fp16, else fp32) is written to src/mpoxscan/bundled/ with card.json and fidelity.json
(the fp32 model's probabilities on the held-out images, so that a test can check the shipped file against them).
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
#: The cross-validations of exactly this recipe (benchmarks/cv_bench.py runs), the primary estimate first.
CV_RUNS = {"patient-grouped 10 folds": "finetune-10fold",
           "MSLD v2.0's official 5 splits, patient-grouped (they put 1 to 2 patient groups on both sides of a split; "
           "see benchmarks/results/curate.md)": "finetune-exports-official"}
CV_RESULTS = REPO / "benchmarks" / "results" / "cv"
DATASET = {"name": "MSLD v2.0 (Mpox Skin Lesion Dataset)", "folder": "msld-v2",
           "licence": "CC BY-NC 4.0: non-commercial research use only",
           "citation": "Ali et al., Mpox Skin Lesion Dataset v2.0, 2024"}
INTENDED_USE = ("A preliminary screening aid for skin lesions photographed with a phone: it says whether the photo "
                "looks like mpox enough to deserve a health worker's attention. Research and non-commercial use.")
LIMITS = [
    "Not a diagnosis and not a medical device: a negative answer does not rule mpox out.",
    "Trained on 750 public photos of 6 classes (mpox, chickenpox, cowpox, HFMD, measles, healthy); any other skin "
    "condition will be forced into one of them.",
    "Public images are mostly of typical presentations; accuracy on early lesions, mucosal lesions or unusual photos "
    "is unknown. Figures per skin tone (ITA bins) are in cross_validated_metrics where measured.",
    "Photos the model cannot judge get 'cannot tell' (too small, too dark, blurred, too compressed, not a skin "
    "close-up, unlike its training photos: answer_rule); the off-task check learned only what skin close-ups look "
    "like, so a picture of skin that is not a lesion close-up (a face, a hand) may still be screened.",
    "The screening threshold was set for 95 % mpox sensitivity on 150 held-out photos: it gives many false "
    "positives by design.",
]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _rounded(v: dict) -> dict:
    return {"mean": round(v["mean"], 4), "sd": round(v["sd"], 4)}


def cv_estimate(recipe: dict = RECIPE, runs: dict[str, str] = CV_RUNS, folder: Path = CV_RESULTS) -> dict:
    """The recipe's cross-validated metrics, as benchmarks/cv_bench.py measured them: per protocol the mean and sd
    over folds, the pooled out-of-fold figures with their patient-bootstrap intervals, and the per-skin-tone
    figures where the manifest had tones. A run of another recipe (other strategy options) is an error, not a
    silent substitute."""
    from mpoxscan.training.cv import resolved_options

    keep = ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc_ovr", "screening_auc", "screening_sensitivity",
            "screening_specificity", "ece")
    # Compared with defaults filled in on both sides: runs record every option since 2026-11-27, RECIPE only those
    # it sets, and a card's recipe whatever its checkpoint recorded.
    wanted = resolved_options(recipe["strategy"], recipe["options"])
    protocols = {}
    for protocol, name in runs.items():
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
        entry = {"source": str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path),
                 "folds": len(model["folds"]), "metrics": {k: _rounded(model["summary"][k]) for k in keep}}
        if model.get("pooled"):
            entry["pooled_out_of_fold"] = model["pooled"]
        if model.get("tone"):
            entry["skin_tone"] = model["tone"]
        if model.get("exports"):
            entry["exported_files"] = {p: {k: _rounded(e[k]) for k in ("accuracy", "macro_f1", "agreement_with_fp32")}
                                       for p, e in model["exports"].items()}
        protocols[protocol] = entry
    if not protocols:
        return {}
    primary = next(iter(protocols))
    return {"protocol": primary, "metrics": protocols[primary]["metrics"], "protocols": protocols,
            "note": "Estimates of the recipe (the same training on other data splits), not scores of this file: "
                    "this file was trained on all of these images. exported_files: each fold's model exported and "
                    "quantized like this file, scored on that fold's test images. skin_tone: pooled out-of-fold, "
                    "each photo at its fold's threshold, by ITA bin."}


def training_manifest(data: Path, folder: Path) -> Path:
    """Curate the bundle's training set (MSLD v2.0, its official folds) into ``folder``; the manifest's path.
    Benchmarks of the shipped model call this too, to find its held-out photos."""
    from mpoxscan.data.curate import CurateOptions, curate, write_outputs
    from mpoxscan.data.sources import Source

    data = Path(data).resolve()
    opts = CurateOptions(folds_from=data / DATASET["folder"] / "_meta" / "folds.csv", progress=True)
    write_outputs(curate([Source("msld2", data / DATASET["folder"], r"^([A-Z]+_\d+)_")], opts), Path(folder), opts, force=True)
    return Path(folder) / "manifest.csv"


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


def build(data: Path, work: Path, gate: Gate = Gate(), reuse_checkpoint: bool = False) -> dict:
    import torch

    from mpoxscan.deploy.export import export, outputs_of
    from mpoxscan.deploy.runtime import Screener
    from mpoxscan.errors import MpoxscanError
    from mpoxscan.images import load_image
    from mpoxscan.data.manifest import kept_rows, same_training_data
    from mpoxscan.explain.attribution import gradcam_maps
    from mpoxscan.training.train import inner_split, load_checkpoint, train

    data, work = Path(data).resolve(), Path(work)
    manifest = training_manifest(data, work / "msld2")
    if reuse_checkpoint and (work / "checkpoint" / "model.pt").exists():
        _, card = load_checkpoint(work / "checkpoint")
        if not same_training_data(manifest, card["data"]):
            raise SystemExit(f"{work / 'checkpoint'} was trained on another manifest: build without --reuse-checkpoint")
        other = checkpoint_recipe_differs(card)
        if other:
            raise SystemExit(f"{work / 'checkpoint'} was trained with another recipe ({other}): build without "
                             "--reuse-checkpoint")
    else:
        card = train(manifest, RECIPE["architecture"], RECIPE["strategy"], work / "checkpoint", views=RECIPE["views"],
                     seed=RECIPE["seed"], force=True, options=RECIPE["options"])
    exported = work / "export"
    report, rejected = None, {}
    for precisions in (["fp32", "int8"], ["fp32", "fp16"], ["fp32"]):  # the smallest variant that passes the gate
        try:
            report = export(work / "checkpoint", exported, precisions, manifest, gate, force=True)
            break
        except MpoxscanError as exc:
            print(f"{precisions[-1]} not bundled: {exc}", flush=True)
            rejected[precisions[-1]] = json.loads((exported / "export.json").read_text())["variants"][precisions[-1]]
    assert report is not None
    chosen = [p for p in ("int8", "fp16", "fp32") if "file" in report["variants"].get(p, {})][0]
    PACKAGE_DIR.mkdir(exist_ok=True)
    target = PACKAGE_DIR / "model.onnx"
    shutil.copyfile(exported / f"model.{chosen}.onnx", target)

    # The fp32 reference on the held-out images: what the test compares the shipped file with.
    rows = kept_rows(manifest)
    held = [rows[k] for k in inner_split(rows, RECIPE["seed"]).valid]
    ref = Screener(exported / "model.fp32.onnx")
    images = np.stack([ref.preprocessing(load_image(r.path, min_side=ref.input_size)) for r in held])
    out_ref = outputs_of(ref, images)
    p_ref = out_ref["probabilities"]
    # captum's Grad-CAM of the fp32 answer on the PyTorch model: what the shipped file's on-device map must match.
    model, _ = load_checkpoint(work / "checkpoint")
    cams = np.concatenate([gradcam_maps(model, torch.from_numpy(images[k:k + 16]),
                                        torch.from_numpy(p_ref[k:k + 16].argmax(1))).detach().numpy()
                           for k in range(0, len(images), 16)])
    fidelity = {"reference": "fp32, offtask, quality: outputs of the fp32 ONNX export of the same checkpoint; gradcam: "
                              "captum LayerGradCam of the PyTorch checkpoint for the fp32 answer (last feature map)", "images": [
        {"path": f"{DATASET['folder']}/{r.relpath}", "sha256": r.sha256, "label": r.label,
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
        "positive_class": card["positive_class"], "screening_threshold": card["screening_threshold"],
        "answer_rule": Screener(target).rule.as_dict(),
        "temperature": card["temperature"], "preprocessing": card["preprocessing"],
        "data": {**{k: v for k, v in DATASET.items() if k != "folder"}, "images": card["data"]["images"],
                 "manifest_sha256": card["data"]["manifest_sha256"], "rows_sha256": card["data"].get("rows_sha256")},
        "recipe": {**RECIPE, **{k: v for k, v in card["training"].items() if k != "seconds"}},
        "held_out_metrics": {k: card["validation_metrics"][k] for k in ("accuracy", "balanced_accuracy", "macro_f1")}
        | {"screening": card["validation_metrics"].get("screening"),
           "note": "on the 150 held-out photos that chose the epoch, the temperature and the threshold: optimistic"},
        "cross_validated_metrics": cv_estimate(),
        "fidelity": {"gate": gate.__dict__, "variants": variants, "int8_selection": report.get("int8_selection")},
        "intended_use": INTENDED_USE, "limitations": LIMITS,
    }
    if rejected:
        model_card["fidelity"]["rejected"] = rejected
    (PACKAGE_DIR / "card.json").write_text(json.dumps(model_card, indent=2) + "\n")
    return model_card


def refresh_card_estimates(package: Path = PACKAGE_DIR, runs: dict[str, str] = CV_RUNS, folder: Path = CV_RESULTS) -> dict:
    """Rewrite only ``cross_validated_metrics`` of the shipped card: they describe the recipe (measured by cv runs
    of it), not the file, so a new run of the same recipe updates them without rebuilding the model."""
    path = package / "card.json"
    card = json.loads(path.read_text())
    recipe = {k: card["recipe"].get(k, RECIPE[k]) for k in ("architecture", "strategy")} | {
        "options": card["recipe"].get("options", {})}
    if recipe["architecture"] != RECIPE["architecture"] or recipe["strategy"] != RECIPE["strategy"]:
        raise SystemExit(f"{path} describes {recipe['architecture']} {recipe['strategy']}, not the recipe in bundle.py")
    card["cross_validated_metrics"] = cv_estimate(recipe, runs, folder)
    path.write_text(json.dumps(card, indent=2) + "\n")
    return card


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bundle")
    parser.add_argument("--reuse-checkpoint", action="store_true",
                        help="export the checkpoint a previous build left in --work again, without training (after a "
                             "change to export, quantization or the answer rule)")
    parser.add_argument("--card-only", action="store_true",
                        help="only refresh the card's cross-validated figures from benchmarks/results/cv (after a new "
                             "cv_bench run of the same recipe); the model file is not touched")
    args = parser.parse_args()
    if args.card_only:
        card = refresh_card_estimates()
        print(f"wrote {PACKAGE_DIR / 'card.json'}: cross-validated figures from "
              f"{', '.join(card['cross_validated_metrics'].get('protocols', {})) or 'no run'}")
        return
    card = build(args.data, args.work, reuse_checkpoint=args.reuse_checkpoint)
    print(f"wrote {PACKAGE_DIR / card['file']} ({card['precision']}, {card['bytes'] / 1e6:.2f} MB) and its card")


if __name__ == "__main__":
    main()
