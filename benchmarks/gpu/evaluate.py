"""The whole GPU evaluation of issue 12 in one go: the student (EfficientNet-Lite0, whole network, `full`) on MSLD
v2.0's 5 official splits and its 10 patient-grouped folds, and the student that would ship, trained on every photo;
with `--strategy distill`, each fold trains its own teachers first. With `--preset pool` (issue 26, item 6): the
pooled public data that `prepare.py --pool` carries, under leave one site out (and, if asked, the pool's official
splits and grouped folds), each fold at several training seeds, so that a figure is a mean over seeds and the seeds'
average (the teacher a distillation would use) is measured on the same left-out photos. See benchmarks/gpu/README.md.

    PYTHONPATH=src python3 benchmarks/gpu/evaluate.py --out $OUT            # on the GPU machine (run.sh)
    PYTHONPATH=src .venv/bin/python benchmarks/gpu/evaluate.py --preset smoke --out /tmp/gpu-smoke   # here, CPU
    PYTHONPATH=src .venv/bin/python benchmarks/gpu/evaluate.py --preset pool-smoke --out /tmp/gpu-pool-smoke

Each fold is one task (with distill: fold-local teachers, then the student, all with `mpoxscan.training.distill`);
tasks run in parallel processes that share the GPU (the probe found per-step overhead, not GPU arithmetic, to be
the limit). A task that would start too close to the time budget is skipped, and the pool is stopped at the budget:
whatever finished is scored. Writes to --out (at most 8 files, as the device tool returns them): results.json,
oof_predictions.csv, predictions.tar.gz, student.pt, student_card.json (and log.txt through run.sh).
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing as mp
import os
import shutil
import sys
import tarfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GPU = REPO / ".gpu"
PROTOCOLS = {"official": GPU / "curated" / "official" / "manifest.csv", "kfold": GPU / "curated" / "10fold" / "manifest.csv"}
#: The pooled data (prepare.py --pool): one manifest that every protocol splits its own way (cv's make_splits).
POOL = GPU / "pool" / "manifest.csv"
POOL_PROTOCOLS = ("official", "kfold", "loso")
#: Training photos per task of the MSLD runs that Settings.first_task_s was measured on (official splits: 755 photos,
#: about 63 tested and 134 held for the epoch): a pool task's estimate scales with its own training photos.
MEASURED_TRAIN_PHOTOS = 540


@dataclass(frozen=True)
class Settings:
    student: str = "efficientnet_lite0"
    student_size: int = 320
    strategy: str = "full"  # the student alone (fits one call: 16 tasks in 338-347 s); "distill": teachers first
    protocols: tuple[str, ...] = ("official", "kfold")
    teachers: tuple[str, ...] = ("efficientnet_lite0@320", "efficientnet_lite2@260")
    teacher_epochs: int | None = None  # distill: the teachers' epochs (None: the student's)
    epochs: int = 40  # the probe's schedule (TOOLCHAIN.md), FullParams' default: 20 of batch 64 did worse
    batch_size: int = 32
    device: str = "cuda"
    workers: int = 8  # 16 tasks: two rounds
    budget_s: float = 420.0  # training stops here (the summary, bootstrap and copying follow: about 30 s)
    min_task_s: float | None = None  # a task's expected time until one has finished; None: as measured (first_task_s)
    n_boot: int = 1000
    folds_per_protocol: int = 0  # 0: all
    folds: tuple[str, ...] = ()  # only these folds (by name, e.g. a site under loso); empty: all
    final_student: bool = True
    threads: int = 0
    seed: int = 0
    precise_bn: bool = True  # recorded in each run's config, so that runs with and without it can be told apart
    cudnn_benchmark: bool = False  # FullParams' default since 2026-11-27 (the first run had it on): recorded too
    layer_decay: float = 1.0  # FullParams' layer-wise learning-rate decay (1: off)
    head_only_epochs: int = 0  # FullParams' linear-probe epochs before every layer trains (0: off)
    pool: bool = False  # the pooled data of prepare.py --pool (POOL) instead of MSLD v2.0's two manifests
    # Each fold trained once per seed (empty: once, at ``seed``). The test sides do not depend on the seed, the inner
    # validation (epoch, temperature, threshold) does: a seed is a whole new draw of everything random.
    seeds: tuple[int, ...] = ()
    train_photos: int = MEASURED_TRAIN_PHOTOS  # a task's training photos, for the time estimate (main() measures it)

    def training_seeds(self) -> tuple[int, ...]:
        return self.seeds or (self.seed,)

    def manifest(self, protocol: str) -> Path:
        return POOL if self.pool else PROTOCOLS[protocol]

    def run_key(self, protocol: str, seed: int) -> str:
        """The name of one protocol's run at one seed: the protocol alone when a single seed is trained."""
        return f"{protocol}-seed{seed}" if len(self.training_seeds()) > 1 else protocol

    def task_name(self, kind: str, fold: str, seed: int) -> str:
        return f"{kind}:{fold}" + (f":seed{seed}" if len(self.training_seeds()) > 1 else "")

    def first_task_s(self, running: int | None = None) -> float:
        """A task's expected time in a first round of ``running`` processes sharing an H100 (default ``workers``),
        scaled by epochs only (other batch sizes and input sizes are not measured). `full`, 40 epochs of batch 32 at
        320 px, precise BN, cuDNN without autotuning, 8 processes: first-round tasks 170-207 s (180 and 190 s on
        average in two runs), second-round ones 109-149 s; 10 processes at once: 224-228 s each, hence the factor
        above 8. `distill` (6 processes, 25 epochs, the default teachers, 2026-11-27): each teacher 85-110 s (its first
        epoch 36-46 s, then about 2.6-3 s), the student 70-83 s (3.3 s an epoch, the teachers' forward passes
        included), 31-35 s besides; 288-319 s a task."""
        crowd = max(1.0, min(self.workers, running or self.workers) / 8)  # beyond 8 processes share the GPU more thinly
        # Not measured on the pool: per-step overhead was the limit, so a task's time is scaled by its steps (its
        # training photos times epochs), an estimate that the first finished tasks replace.
        photos = self.train_photos / MEASURED_TRAIN_PHOTOS
        if self.strategy == "distill":
            teacher = 35 + 2.9 * photos * ((self.teacher_epochs or self.epochs) - 1)
            return crowd * (35 + len(self.teachers) * teacher + 3.3 * photos * self.epochs)
        return crowd * 190.0 * photos * self.epochs / 40

    def task_floor_s(self, running: int | None = None) -> float:
        """A task's expected time before any has finished (then the finished ones' mean is): ``min_task_s`` where a
        preset or the command line sets it, else as measured."""
        return self.first_task_s(running) if self.min_task_s is None else self.min_task_s

    def options(self) -> dict:
        """The strategy's options as `cv` and `train` take them."""
        if self.strategy != "distill":
            return {"full": self.full()}
        return {"full": self.full(), "distill": {"teachers": list(self.teachers), "teacher_epochs": self.teacher_epochs}}

    def full(self) -> dict:
        return {"epochs": self.epochs, "batch_size": self.batch_size, "device": self.device,
                "input_size": self.student_size, "threads": self.threads, "precise_bn": self.precise_bn,
                "cudnn_benchmark": self.cudnn_benchmark, "layer_decay": self.layer_decay,
                "head_only_epochs": self.head_only_epochs}


PRESETS = {
    "gpu": Settings(),
    # Here, on the CPU: the same code path on every photo, at 32 px for one epoch, one fold per protocol.
    "smoke": Settings(strategy="distill", student_size=32, teachers=("efficientnet_lite0@32",), epochs=1, batch_size=16, device="cpu",
                      workers=2, budget_s=1500, min_task_s=0, n_boot=50, folds_per_protocol=1, threads=1),
    # Issue 26, item 6: leave one site out, 5 sites x 3 seeds = 15 tasks of `full` at the shipped model's 224 px.
    # 15 epochs of about 1,500 photos are about as many steps (~710) as the probe's 40 epochs of MSLD's ~540.
    # Estimated, not measured: about 200 s a task in 8 processes, two rounds in the 440 s budget. 500 bootstrap
    # draws: the pooled statistics of three runs of 2,371 photos must fit the call (they are recomputed here).
    "pool": Settings(pool=True, protocols=("loso",), seeds=(0, 1, 2), student_size=224, epochs=15,
                     final_student=False, budget_s=440, n_boot=500),
    # The pool path here, on the CPU: 32 px, one epoch, one site with mpox, two seeds.
    "pool-smoke": Settings(pool=True, protocols=("loso",), seeds=(0, 1), student_size=32, epochs=1, batch_size=16,
                           device="cpu", workers=2, budget_s=1500, min_task_s=0, n_boot=50, folds=("msid",),
                           threads=1, final_student=False),
}


def _task(args: tuple) -> dict:
    """One fold (or the final student) in a worker process: {task, seconds, status}."""
    kind, fold, seed, settings, work, deadline, floor = args
    started = time.time()
    durations = Path(work) / "durations.txt"  # each finished task appends its seconds: the estimate of the next
    done = [float(x) for x in durations.read_text().split()] if durations.exists() else []
    # Before any task has finished, the measured (or given) time of a first task; then the finished tasks' mean (a
    # process's later tasks were measured faster than its first: the floor must not hold them back).
    expected = sum(done) / len(done) if done else floor
    name = settings.task_name(kind, fold, seed)
    if started + expected > deadline:
        return {"task": name, "status": f"skipped (time budget: {expected:.0f} s expected)", "seconds": 0.0}
    from mpoxscan.training.cv import CVConfig, run_cv

    options = settings.options()
    if kind == "final":
        from mpoxscan.training.train import train

        train(settings.manifest("kfold"), settings.student, settings.strategy, Path(work) / "student", seed=seed,
              force=True, options=options)
    else:
        config = CVConfig(manifest=str(settings.manifest(kind)), models=[settings.student], strategy=settings.strategy,
                          protocol=kind, views=0, seed=seed, only_folds=[fold],
                          extra={**options, "bootstrap": 1})
        # one folder per task: no two processes share a file
        run_cv(config, Path(work) / settings.run_key(kind, seed) / fold, progress=False)
    seconds = round(time.time() - started, 1)
    with open(durations, "a") as fh:  # one short line per write: appends of concurrent processes do not mix
        fh.write(f"{seconds}\n")
    return {"task": name, "status": "done", "seconds": seconds}


def _tasks(settings: Settings) -> list[tuple[str, str, int]]:
    """(protocol, fold, seed): the first protocol's folds (official by default: comparable with the probe), then the
    shipped student, then the other protocols' folds; seed by seed within a protocol, so that a budget that stops
    early leaves whole seeds (every fold of one model), not every seed of some folds."""
    from mpoxscan.training.cv import kept_rows, make_splits

    out = []
    for protocol in settings.protocols:
        names = [s.name for s in make_splits(kept_rows(settings.manifest(protocol)), protocol, settings.seed)
                 if not settings.folds or s.name in settings.folds]
        out += [(protocol, n, seed) for seed in settings.training_seeds()
                for n in names[:settings.folds_per_protocol or None]]
        if protocol == settings.protocols[0] and settings.final_student:
            out.append(("final", "all", settings.seed))
    return out


def _summarise(protocol: str, seed: int, settings: Settings, work: Path) -> tuple[dict, list[list[str]]]:
    """Merge the folds of one protocol at one seed, then the cv summary (per-fold metrics, pooled bootstrap
    statistics) and the rows of its out-of-fold predictions (their first column: the run's key)."""
    from mpoxscan.training.cv import CVConfig, kept_rows, make_splits, summarise, write_oof_predictions

    key = settings.run_key(protocol, seed)
    merged = work / key / "all"
    (merged / "predictions").mkdir(parents=True, exist_ok=True)
    for fold in (work / key).glob("*/predictions"):  # test and predictions/valid/ (inner validation)
        if fold.parent != merged:
            shutil.copytree(fold, merged / "predictions", dirs_exist_ok=True)
    manifest = settings.manifest(protocol)
    rows = kept_rows(manifest)
    classes = sorted({r.label for r in rows})
    splits = make_splits(rows, protocol, seed)
    config = CVConfig(manifest=str(manifest), models=[settings.student], strategy=settings.strategy,
                      protocol=protocol, views=0, seed=seed,
                      extra={**settings.options(), "bootstrap": settings.n_boot})  # the recipe, in results.json
    results = summarise(merged, config, classes, splits, rows)
    with open(write_oof_predictions(merged, config, classes, splits, rows), newline="") as fh:
        table = list(csv.reader(fh))
    return results, [["protocol", *table[0]]] + [[key, *r] for r in table[1:]]


def _mean_train_photos(settings: Settings, tasks: list[tuple[str, str, int]]) -> int:
    """The tasks' mean count of training photos (the time estimate scales with it); the final student trains on
    about 80 % of every photo."""
    from mpoxscan.training.cv import kept_rows, make_splits

    sizes = []
    for protocol in dict.fromkeys(k for k, _, _ in tasks):
        rows = kept_rows(settings.manifest("kfold" if protocol == "final" else protocol))
        if protocol == "final":
            sizes.append(int(0.8 * len(rows)))
            continue
        chosen = {f for k, f, _ in tasks if k == protocol}
        sizes += [len(s.train) for s in make_splits(rows, protocol, settings.seed) if s.name in chosen]
    return round(sum(sizes) / len(sizes)) if sizes else MEASURED_TRAIN_PHOTOS


def _headline(results: dict) -> dict:
    """Pooled accuracy, mpox AUC, sensitivity / specificity and PPV with their 95 % CIs, per variant."""
    model = next(iter(results["models"].values()), None)
    if model is None:
        return {}
    keep = ("accuracy", "macro_f1", "screening_auc", "sensitivity", "specificity", "ppv_at_0.01", "ppv_at_0.1")
    return {v: {"ece": round(s["ece"], 4), **{k: [round(s["metrics"][k]["value"], 4), [round(x, 4) for x in s["metrics"][k]["ci95"]]]
                                              for k in keep if k in s["metrics"]}}
            for v, s in model["pooled"].items()} | {"folds": len(model["folds"]),
                                                   "fold_accuracy_mean_sd": [round(model["summary"]["accuracy"]["mean"], 4),
                                                                             round(model["summary"]["accuracy"]["sd"], 4)]}


def _check_recipe(settings: Settings) -> None:
    """Exit with one line if an option is out of range, a network unknown or its weights missing (on the GPU machine
    only .gpu/weights has them: prepare.py copies Lite0 and Lite2), before any worker starts."""
    from mpoxscan.errors import MpoxscanError
    from mpoxscan.models import create_model
    from mpoxscan.training.distill import DistillParams
    from mpoxscan.training.full import FullParams

    names = [settings.student]
    try:
        FullParams.from_dict(settings.full())
        if settings.strategy == "distill":
            names += [name for name, _ in DistillParams.from_dict(settings.options()["distill"]).teacher_specs()]
        for name in dict.fromkeys(names):
            create_model(name, pretrained=True, num_classes=2)
    except MpoxscanError as exc:
        sys.exit(f"evaluate.py: {exc}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="gpu")
    parser.add_argument("--work", type=Path, default=Path("/tmp/mpoxscan-gpu-work"))
    for name in ("epochs", "batch_size", "workers", "student_size", "head_only_epochs"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int)
    parser.add_argument("--layer-decay", type=float, help="layer-wise learning-rate decay of the backbone (1: off)")
    parser.add_argument("--budget-s", type=float)
    parser.add_argument("--min-task-s", type=float, help="a task's expected time until one has finished (default: "
                        "as measured on the H100, Settings.first_task_s); then the finished tasks' mean")
    parser.add_argument("--seed", type=int, help="of the training runs (and the inner split of the 10 folds)")
    parser.add_argument("--strategy", choices=("distill", "full"), help="full (default of --preset gpu): the student alone; distill: teachers first")
    parser.add_argument("--protocols", help="comma-separated, of: official, kfold (default both); with the pool also "
                        "loso (the pool preset's default)")
    parser.add_argument("--seeds", help="comma-separated training seeds: each fold trained once per seed (default: "
                        "--seed alone; the pool preset: 0,1,2)")
    parser.add_argument("--teachers", help="distill: comma-separated model@size (default "
                        "efficientnet_lite0@320,efficientnet_lite2@260)")
    parser.add_argument("--teacher-epochs", type=int, help="distill: the teachers' epochs (default: --epochs)")
    parser.add_argument("--no-final", dest="final_student", action="store_false", default=None,
                        help="do not train the student on every photo")
    parser.add_argument("--no-precise-bn", dest="precise_bn", action="store_false", default=None,
                        help="keep the running batch-norm statistics (the first GPU run's recipe)")
    args = parser.parse_args()
    settings = PRESETS[args.preset]
    if args.protocols:
        chosen = tuple(dict.fromkeys(p.strip() for p in args.protocols.split(",")))  # once each: one folder per fold
        known = POOL_PROTOCOLS if settings.pool else tuple(PROTOCOLS)
        unknown = set(chosen) - set(known)
        if unknown:
            sys.exit(f"unknown protocol(s) {sorted(unknown)} (known{' with the pool' if settings.pool else ''}: "
                     f"{', '.join(known)})")
        settings = replace(settings, protocols=chosen)
    if args.seeds:
        try:
            seeds = tuple(dict.fromkeys(int(x) for x in args.seeds.split(",") if x.strip()))
        except ValueError:
            sys.exit(f"evaluate.py: --seeds takes whole numbers separated by commas, not {args.seeds!r}")
        if not seeds:
            sys.exit("evaluate.py: --seeds names no seed")
        settings = replace(settings, seeds=seeds)
    if (args.teachers or args.teacher_epochs is not None) and (args.strategy or settings.strategy) != "distill":
        sys.exit("evaluate.py: --teachers and --teacher-epochs are options of --strategy distill")
    if args.teachers:
        settings = replace(settings, teachers=tuple(t.strip() for t in args.teachers.split(",") if t.strip()))
    settings = replace(settings, **{k: getattr(args, k) for k in ("strategy", "final_student", "precise_bn", "teacher_epochs")
                                    if getattr(args, k) is not None})
    settings = replace(settings, **{k: getattr(args, k) for k in ("epochs", "batch_size", "workers", "student_size",
                                                                  "budget_s", "min_task_s", "seed", "layer_decay",
                                                                  "head_only_epochs")
                                    if getattr(args, k) is not None})
    os.environ.setdefault("MPOXSCAN_WEIGHTS_DIR", str(GPU / "weights"))
    _check_recipe(settings)
    missing = [p for p in dict.fromkeys(settings.manifest(k) for k in settings.protocols) if not p.exists()]
    if missing:
        sys.exit(f"missing {missing[0].relative_to(REPO)}: run benchmarks/gpu/prepare.py"
                 f"{' --pool' if settings.pool else ''} and carry .gpu")
    started = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.work.exists():
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True)
    import torch

    tasks = _tasks(settings)
    settings = replace(settings, train_photos=_mean_train_photos(settings, tasks))
    facts = {"preset": args.preset, "settings": asdict(settings), "python": sys.version.split()[0],
             "torch": torch.__version__, "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}
    print(json.dumps(facts), flush=True)
    deadline = started + settings.budget_s
    per_task = settings.task_floor_s(len(tasks))
    # about 10 s pass before the first task starts (imports, spawning): measured 9 s on the H100
    # Rounds of `workers` tasks, each round as long as a first one (later rounds were measured faster: a margin).
    fit = min(len(tasks), settings.workers * int((settings.budget_s - 10) // per_task)) if per_task else len(tasks)
    origin = "the H100 timings at 320 px" if settings.min_task_s is None else "--min-task-s or the preset"
    print(f"plan: {len(tasks)} tasks in {settings.workers} processes, about {per_task:.0f} s each ({origin}): "
          f"{fit} fit in the {settings.budget_s:.0f} s budget", flush=True)
    log = []
    # spawn: CUDA cannot be used in forked children.
    with mp.get_context("spawn").Pool(settings.workers) as pool:
        pending = [pool.apply_async(_task, ((k, f, seed, settings, str(args.work), deadline, per_task),))
                   for k, f, seed in tasks]
        for (kind, fold, seed), result in zip(tasks, pending):
            name = settings.task_name(kind, fold, seed)
            try:
                got = result.get(timeout=max(1.0, deadline - time.time()))
            except mp.TimeoutError:
                got = {"task": name, "status": "stopped at the time budget", "seconds": None}
            except Exception as exc:  # one failed fold must not lose the others: recorded, and visible in the log
                got = {"task": name, "status": f"failed: {type(exc).__name__}: {exc}"[:300], "seconds": None}
            log.append(got)
            print(f"[{time.time() - started:6.1f} s] {got}", flush=True)
        pool.terminate()
    trained_s = time.time() - started
    results, table = {}, []
    for protocol in settings.protocols:
        for seed in settings.training_seeds():
            key = settings.run_key(protocol, seed)
            if (args.work / key).exists():
                results[key], rows = _summarise(protocol, seed, settings, args.work)
                table += rows if not table else rows[1:]
    report = {**facts, "seconds": {"training": round(trained_s, 1), "total": round(time.time() - started, 1)},
              "tasks": log, "headline": {p: _headline(r) for p, r in results.items()}, "results": results}
    (args.out / "results.json").write_text(json.dumps(report, indent=1) + "\n")
    with open(args.out / "oof_predictions.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(table)
    with tarfile.open(args.out / "predictions.tar.gz", "w:gz") as tar:  # per fold, with inner validation: re-scorable
        for key in results:
            tar.add(args.work / key / "all" / "predictions", arcname=f"{key}/predictions")
    student = args.work / "student"
    if (student / "model.pt").exists():
        shutil.copyfile(student / "model.pt", args.out / "student.pt")
        shutil.copyfile(student / "card.json", args.out / "student_card.json")
    for protocol, head in report["headline"].items():
        for variant, m in head.items():
            if isinstance(m, dict):
                print(f"{protocol:<8} {variant:<12} " + "  ".join(
                    f"{k} {v[0]:.3f} [{v[1][0]:.3f}, {v[1][1]:.3f}]" for k, v in m.items() if isinstance(v, list))
                      + f"  ece {m['ece']:.3f}")
        print(f"{protocol:<8} folds done {head.get('folds')}, accuracy mean / sd over folds {head.get('fold_accuracy_mean_sd')}")
    print(f"done in {time.time() - started:.1f} s (training {trained_s:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
