"""Measure the phone-side figures the README quotes: export fidelity and the footprint / timing table.

    .venv/bin/python benchmarks/deploy_bench.py [--data ../shared/data] [--work runs/bench] [--only fidelity,bench]

fidelity: for each backbone of the zoo (linear head, trained on MSLD v2.0) and for the shipped recipe
(EfficientNet-Lite0, last blocks fine-tuned: the checkpoint `make model` leaves in runs/bundle/checkpoint), export
fp32, fp16 and int8 and compare each variant with fp32 on the checkpoint's held-out patients (150 images), against
the default gate (agreement >= 99 %, accuracy drop <= 1 point).
bench: `mpoxscan bench` of every exported file (size, latency at 1 and 2 threads, batch-16 throughput, cold start
and peak memory of a fresh process), as a table and a plot.
Results: benchmarks/results/deploy/{fidelity.json, bench.json, deploy.md, bench.png}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from mpoxscan.deploy.bench import bench_model, plot, table
from mpoxscan.deploy.export import export
from mpoxscan.deploy.fidelity import Gate
from mpoxscan.models import list_models
from mpoxscan.training.train import train

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "deploy"
SHIPPED = HERE.parent / "runs" / "bundle" / "checkpoint" / "model.pt"


def fidelity(work: Path, manifest: Path) -> dict:
    out = {}
    checkpoints = {}
    for name in list_models():
        folder = work / "deploy" / f"{name}-linear"
        if not (folder / "model.pt").exists():
            train(manifest, name, "linear", folder, views=4)
        checkpoints[f"{name} (linear)"] = (folder / "model.pt", manifest)
    if SHIPPED.exists():
        checkpoints["efficientnet_lite0 (finetune, shipped recipe)"] = (SHIPPED, SHIPPED.parent.parent / "msld2" / "manifest.csv")
    gate = Gate()
    for label, (ckpt, calib) in checkpoints.items():
        # Every variant is written (gate switched off) so that all can be benchmarked; the default gate's verdict
        # is computed from the same measurements and reported beside them.
        report = export(ckpt, ckpt.parent / "export", ["fp32", "fp16", "int8"], calib, Gate(0.0, 100.0), force=True)
        for v in report["variants"].values():
            v["default_gate_failures"] = gate.failures(v) if "agreement" in v else []
        out[label] = {"folder": str(ckpt.parent / "export"), **report}
        print(label, {p: (round(100 * v.get("agreement", 1), 1), v["default_gate_failures"]) for p, v in report["variants"].items()}, flush=True)
    return out


def fidelity_table(results: dict) -> str:
    lines = ["| model | variant | size (MB) | top-1 agreement with fp32 % | accuracy % (fp32) | max abs. prob. difference | int8 settings | default gate |",
             "|---|---|---:|---:|---:|---:|---|---|"]
    for label, r in results.items():
        for p, v in r["variants"].items():
            if p == "fp32":
                continue
            lines.append(f"| {label} | {p} | {v['bytes'] / 1e6:.2f} | {100 * v['agreement']:.1f} | {100 * v['accuracy']:.1f} "
                         f"({100 * v['accuracy_reference']:.1f}) | {v['max_probability_difference']:.3f} | "
                         f"{r['int8_selection']['chosen'] if p == 'int8' else '-'} | "
                         f"{'pass' if not v['default_gate_failures'] else 'FAIL: ' + '; '.join(v['default_gate_failures'])} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, default=HERE.parent / "runs" / "bench")
    parser.add_argument("--only", default="fidelity,bench")
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    stages = args.only.split(",")
    if "fidelity" in stages:
        from cv_bench import manifests

        results = fidelity(args.work, manifests(args.data, args.work)["official"])
        (RESULTS / "fidelity.json").write_text(json.dumps(results, indent=2) + "\n")
    results = json.loads((RESULTS / "fidelity.json").read_text())
    if "bench" in stages:
        rows = []
        for label, r in results.items():
            for p in ("fp32", "fp16", "int8"):
                path = Path(r["folder"]) / f"model.{p}.onnx"
                print("bench", path, flush=True)
                rows.append({**bench_model(path, runs=args.runs), "label": f"{label} {p}"})
        machine = {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                   "python": platform.python_version(), "measured": time.strftime("%Y-%m-%d %H:%M")}
        (RESULTS / "bench.json").write_text(json.dumps({"machine": machine, "models": rows}, indent=2) + "\n")
        plot(rows, RESULTS / "bench.png")
    bench = json.loads((RESULTS / "bench.json").read_text())
    md = ["# Export fidelity and on-device cost", "",
          "Measured by `benchmarks/deploy_bench.py`. Held-out images: the 150 images (20 % of the patients) that each "
          "checkpoint's training kept aside; the weights never saw them.", "", "## Fidelity of fp16 and int8 against fp32", "",
          fidelity_table(results), "", f"## Footprint and timing ({bench['machine']['cpus']} CPU cores, "
          f"{bench['machine']['processor']}, ONNX Runtime, {bench['machine']['measured']})", "", table(bench["models"]), "",
          "![size, latency and memory](bench.png)", ""]
    (RESULTS / "deploy.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
