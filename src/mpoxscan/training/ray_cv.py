"""`mpoxscan cv --ray [ADDRESS]`: each (backbone, fold) task of a cross-validation as a Ray task.

The tasks are the ones `run_cv` would run one after another here (`cv.run_fold`, handed in by `run_cv` so that this
module never imports cv.py, which imports it): each trains, calibrates and writes
its fold's predictions into the run folder, so the run folder, the resumption (finished folds are skipped before any
task is sent) and the summary are the same with and without Ray. On a cluster the run folder, the manifest's photos
and the feature cache must be on storage every node reads and writes (a shared file system). A task asks Ray for
``cpus`` CPUs (PyTorch then uses that many threads) and, for the whole-network strategies when the cluster has GPUs,
one GPU.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from mpoxscan.errors import MpoxscanError

#: Strategies that train the whole network: worth a GPU where the cluster has one.
GPU_STRATEGIES = ("full", "distill")


def _fold_task(run_fold: Callable, out: str, config, rows, classes: list[str], model: str, split, cpus: int) -> str:
    import torch

    # The strategies size PyTorch's thread pool from OMP_NUM_THREADS (else all cores): a task uses what it asked for.
    os.environ["OMP_NUM_THREADS"] = str(cpus)
    torch.set_num_threads(cpus)
    run_fold(Path(out), config, rows, classes, model, split)
    return f"{model} {split.name}"


def run_folds_on_ray(address: str, out: Path, config, rows, classes: list[str], pending: list, run_fold: Callable,
                     on_done: Callable[[], object] = lambda: None, cpus: int = 1) -> None:
    """Run the pending (model, split) tasks on Ray, each as ``run_fold(out, config, rows, classes, model, split)``,
    and wait for all of them; the first failure is raised (the folds that finished are kept: rerun to resume)."""
    from mpoxscan.ray_support import start_ray

    if not pending:
        return
    ray = start_ray(address)
    device = str((config.extra.get(config.strategy) or {}).get("device", "auto"))
    gpu = config.strategy in GPU_STRATEGIES and device != "cpu" and ray.cluster_resources().get("GPU", 0) >= 1
    task = ray.remote(num_cpus=cpus, num_gpus=1 if gpu else 0, max_retries=0)(_fold_task)
    # Put the rows once in the object store: every task reads the same manifest.
    rows_ref = ray.put(rows)
    running = {task.remote(run_fold, str(Path(out).resolve()), config, rows_ref, classes, model, split, cpus):
               (model, split) for model, split in pending}
    try:
        while running:
            done, _ = ray.wait(list(running), num_returns=1)
            try:
                ray.get(done[0])
            except ray.exceptions.RayTaskError as exc:
                model, split = running[done[0]]
                cause = exc.cause if getattr(exc, "cause", None) is not None else exc
                raise MpoxscanError(f"{model} on {split.name} failed on Ray: {str(cause).splitlines()[0][:300]}") from None
            del running[done[0]]
            on_done()
    finally:
        for ref in running:
            ray.cancel(ref, force=True)
