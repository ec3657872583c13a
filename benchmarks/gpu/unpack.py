"""Turn what a GPU call returned (or its copy under benchmarks/results/gpu/) into `mpoxscan cv` run folders, one per
protocol, so that the tools that read runs (`benchmarks/ensemble_bench.py`) can re-score and average them with the
CPU runs.

    PYTHONPATH=src .venv/bin/python benchmarks/gpu/unpack.py \
        benchmarks/results/gpu/2026-11-27-full-320-40ep-seed0 --name full320-s0
    # -> runs/gpu/full320-s0-official/ and runs/gpu/full320-s0-kfold/ (config.json, results.json, predictions/)
    PYTHONPATH=src .venv/bin/python benchmarks/gpu/unpack.py benchmarks/results/gpu/2026-11-27-full-320-40ep-seed0 --valid-csv
    # -> benchmarks/results/gpu/2026-11-27-full-320-40ep-seed0/valid_predictions.csv

`--valid-csv` writes the inner-validation predictions of every fold (what each fold's threshold and temperature
were fitted on) as one CSV beside `oof_predictions.csv`, in its columns, so that a figure that needs them (an
ensemble's threshold) can be re-scored from committed files (tests/test_doc_figures.py).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def settings_of(report: dict):
    """The evaluate.py Settings a results.json was made with (its lists back to tuples)."""
    from evaluate import Settings  # this folder's evaluate.py: one definition of how settings become options

    return Settings(**{k: tuple(v) if isinstance(v, list) else v for k, v in report["settings"].items()})


def unpack(returned: Path, name: str, runs: Path) -> list[Path]:
    """One run folder per protocol (and seed, where several were trained: NAME-loso-seed1) of ``returned``
    (results.json and predictions.tar.gz of benchmarks/gpu/evaluate.py)."""
    report = json.loads((returned / "results.json").read_text())
    out = []
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(returned / "predictions.tar.gz") as tar:
        tar.extractall(tmp, filter="data")
        for protocol, results in report["results"].items():
            run = runs / f"{name}-{protocol}"
            if run.exists():
                shutil.rmtree(run)
            run.mkdir(parents=True)
            config = dict(results["config"])
            if "full" not in config.get("extra", {}):  # runs before 2026-11-27 06:00 recorded the recipe only here
                config["extra"] = {**settings_of(report).options(), **config.get("extra", {})}
            # The GPU machine ran from a checkout at its own path: the manifest is the same file of .gpu/ here
            # (the pool's one manifest, or MSLD v2.0's per protocol).
            config["manifest"] = str(REPO / ".gpu" / "pool" / "manifest.csv" if report["settings"].get("pool") else
                                     REPO / ".gpu" / "curated" / ("official" if config["protocol"] == "official"
                                                                  else "10fold") / "manifest.csv")
            (run / "config.json").write_text(json.dumps(config, indent=2) + "\n")
            (run / "results.json").write_text(json.dumps(results, indent=1) + "\n")
            shutil.copytree(Path(tmp) / protocol / "predictions", run / "predictions")
            out.append(run)
    return out


def write_valid_predictions(returned: Path) -> Path:
    """``returned/valid_predictions.csv``: the inner-validation predictions in predictions.tar.gz, one row per photo
    and fold, in oof_predictions.csv's columns (threshold: the one the fold chose on these photos)."""
    report = json.loads((returned / "results.json").read_text())
    path = returned / "valid_predictions.csv"
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(returned / "predictions.tar.gz") as tar:
        tar.extractall(tmp, filter="data")
        classes = next(iter(report["results"].values()))["classes"]
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(["protocol", "image", "sha256", "group", "fold", "model", "strategy", "variant", "label",
                        "threshold"] + [f"p_{c}" for c in classes])
            for protocol in report["results"]:
                for part in sorted((Path(tmp) / protocol / "predictions" / "valid").glob("*.csv")):
                    model, strategy, fold, *variant = part.stem.split("__")
                    threshold = json.loads(part.with_suffix(".json").read_text())["threshold"]
                    with open(part, newline="") as src:
                        for row in csv.DictReader(src):
                            w.writerow([protocol, row["path"], row["sha256"], row["group"], fold, model, strategy,
                                        variant[0] if variant else "main", row["label"], f"{threshold:.6f}"]
                                       + [row[f"p_{c}"] for c in classes])
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("returned", type=Path, help="the folder the device tool returned (files_at)")
    parser.add_argument("--name", help="run folders are named NAME-official and NAME-kfold")
    parser.add_argument("--valid-csv", action="store_true",
                        help="only write RETURNED/valid_predictions.csv (the inner-validation predictions)")
    parser.add_argument("--runs", type=Path, default=REPO / "runs" / "gpu")
    args = parser.parse_args()
    if args.valid_csv:
        print(write_valid_predictions(args.returned))
        return
    if not args.name:
        parser.error("--name is needed to unpack into run folders")
    for run in unpack(args.returned, args.name, args.runs):
        print(run)


if __name__ == "__main__":
    main()
