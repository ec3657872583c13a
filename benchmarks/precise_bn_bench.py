"""Whole-network training (`full`) with and without precise batch-norm statistics, on one official MSLD v2.0 split.

    .venv/bin/python benchmarks/precise_bn_bench.py [--data ../shared/data] [--folds fold1] [--variants precise-bn,running-stats]
                                                    [--epochs 20] [--batch-size 64] [--input-size 224]

The EfficientNet-Lite ports keep TensorFlow's batch-norm momentum (0.01). On the GPU (benchmarks/results/gpu/) a
20-epoch, batch-64 schedule (about 190 steps) ended with its best epoch always the last and a validation loss that
rose above chance first: the running statistics that evaluation uses lag far behind the weights. `full` now
re-estimates them on the training photos before each validation (``FullParams.precise_bn``). This trains the same
fold, seed and schedule twice on the CPU, once each way (two processes, one thread each), and writes
benchmarks/results/precise_bn/: summary.json (per variant and fold: test accuracy, macro-F1, best epoch,
validation-loss history, seconds; merged with earlier invocations) and valid_loss.png. With --folds and --variants
it measures other splits (each variant and fold in its own process, two at a time). The variant `layer-decay` is
precise BN plus the options that keep early layers near their ImageNet weights (`layer_decay` 0.8, the first
2 epochs on the classifier alone): the whole-network counterpart of `finetune`'s frozen early blocks.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "precise_bn"
VARIANTS = {"running-stats": {"precise_bn": False}, "precise-bn": {"precise_bn": True},
            "layer-decay": {"precise_bn": True, "layer_decay": 0.8, "head_only_epochs": 2}}


def _one(args: tuple) -> dict:
    """One cv run of one fold; its fold facts."""
    name, manifest, fold, epochs, batch_size, input_size, work = args
    from mpoxscan.training.cv import CVConfig, run_cv

    full = {"epochs": epochs, "batch_size": batch_size, "device": "cpu", "threads": 1, "input_size": input_size,
            **VARIANTS[name]}
    config = CVConfig(manifest=str(manifest), models=["efficientnet_lite0"], strategy="full", protocol="official",
                      views=0, only_folds=[fold], extra={"full": full, "bootstrap": 200})
    started = time.perf_counter()
    results = run_cv(config, Path(work) / (name if fold == "fold1" else f"{name}-{fold}"), progress=False)
    model = results["models"]["efficientnet_lite0"]
    f = model["folds"][0]
    return {"name": name, "fold": f["fold"], "seconds": round(time.perf_counter() - started, 1),
            "accuracy": round(f["metrics"]["accuracy"], 4), "macro_f1": round(f["metrics"]["macro_f1"], 4),
            "best_epoch": f["info"]["best_epoch"], "best_valid_loss": f["info"]["best_valid_loss"],
            "valid_loss_history": f["info"]["valid_loss_history"], "settings": full}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, default=Path("runs/bench"))
    parser.add_argument("--folds", default="fold1", help="comma-separated official splits")
    parser.add_argument("--variants", default="running-stats,precise-bn", help=f"of: {', '.join(VARIANTS)}")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--input-size", type=int, default=224)
    args = parser.parse_args()
    from cv_bench import manifests  # the same curated manifests as the README's cv figures

    manifest = manifests(args.data, args.work)["official"]
    work = args.work / "precise-bn"
    variants = [v for v in args.variants.split(",") if v]
    if set(variants) - set(VARIANTS):
        raise SystemExit(f"unknown variant in {variants} (known: {', '.join(VARIANTS)})")
    jobs = [(v, manifest, f, args.epochs, args.batch_size, args.input_size, str(work))
            for f in args.folds.split(",") for v in variants]
    with mp.get_context("spawn").Pool(2) as pool:
        runs = pool.map(_one, jobs)
    RESULTS.mkdir(parents=True, exist_ok=True)
    summary_path = RESULTS / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    summary |= {f"{r['name']}/{r['fold']}": r for r in runs}
    summary_path.write_text(json.dumps(dict(sorted(summary.items())), indent=1) + "\n")
    runs = list(summary.values())
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for r in runs:
        h = r["valid_loss_history"]
        ax.plot(range(1, len(h) + 1), h, marker="o", ms=3, ls={"precise-bn": "-", "layer-decay": "-."}.get(r["name"], "--"),
                label=f"{r['name']}, {r['fold']}: test accuracy {100 * r['accuracy']:.1f} %, best epoch {r['best_epoch']}")
    ax.axhline(__import__("math").log(6), color="grey", lw=0.8, ls=":", label="chance (ln 6)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation loss")
    ax.set_title(f"full Lite0 {args.input_size} px, official splits, {args.epochs} epochs of batch {args.batch_size}",
                 fontsize=9)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / "valid_loss.png", dpi=120)
    for r in runs:
        print(f"{r['name']:<14} {r['fold']:<6} accuracy {100 * r['accuracy']:.1f} %  macro-F1 {100 * r['macro_f1']:.1f}  "
              f"best epoch {r['best_epoch']}/{len(r['valid_loss_history'])}  {r['seconds']:.0f} s")


if __name__ == "__main__":
    main()
