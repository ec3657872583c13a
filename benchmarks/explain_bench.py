"""Measure the explanation figures the README quotes, on the shipped model.

    .venv/bin/python benchmarks/explain_bench.py [--work runs/bundle]

Runs `mpoxscan explain --validate` on the checkpoint `make model` trained (runs/bundle/checkpoint) with the
training manifest, i.e. on its 150 held-out photos, and checks the on-device maps of the shipped int8 file and of
the fp32 export against captum's Grad-CAM. Results: benchmarks/results/explain/validation.{json,md,png}.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from mpoxscan.deploy.runtime import bundled_model
from mpoxscan.explain.validate import validate

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "explain"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=HERE.parent / "runs" / "bundle")
    args = parser.parse_args()
    out = args.work / "validation"
    validate(args.work / "checkpoint" / "model.pt", args.work / "msld2" / "manifest.csv", out,
             [bundled_model(), args.work / "export" / "model.fp32.onnx"])
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name in ("validation.json", "validation.md", "validation.png"):
        shutil.copyfile(out / name, RESULTS / name)
    print((RESULTS / "validation.md").read_text())


if __name__ == "__main__":
    main()
