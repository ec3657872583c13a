"""Measure archive screening (`mpoxscan predict --out`, locally and on Ray) on a generated archive of phone photos.

    .venv/bin/python benchmarks/batch_bench.py [--photos 20000] [--archive runs/batch-archive] [--data ../shared/data]

Builds (once) an archive of --photos JPEGs: the kept MSLD v2.0 photos again and again, each copy cut, scaled and
re-encoded at a phone-sized 1280 x 960 (portrait or landscape, quality 80-92), so that decoding costs what it costs
for photos sent from phones. Then screens the whole archive with the bundled model through the command line:
single process (all cores, and one thread), Ray with 1 worker and with one worker per core; then a Ray run killed
at about a third and resumed, counting the photos answered twice or never. Writes benchmarks/results/batch/batch.json,
batch.md and batch.png. Needs the ray extra (make ray). Run it on a quiet machine: it measures throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "batch"
PHONE = (1280, 960)


def _make(job: tuple[str, Path, int]) -> None:
    from PIL import Image

    source, target, k = job
    rng = np.random.default_rng(k)
    with Image.open(source) as im:
        im = im.convert("RGB")
    w, h = im.size
    cut = rng.uniform(0.8, 1.0)  # a slightly different framing of each copy
    cw, ch = int(w * cut), int(h * cut)
    left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    size = PHONE if rng.random() < 0.5 else PHONE[::-1]
    im.resize(size, Image.Resampling.BICUBIC, box=(left, top, left + cw, top + ch)).save(
        target, "JPEG", quality=int(rng.integers(80, 93)))


def build_archive(data: Path, folder: Path, n: int) -> list[Path]:
    from tqdm import tqdm

    sources = sorted((data / "msld-v2").rglob("*.jpg"))
    if not sources:
        raise SystemExit(f"no photos under {data / 'msld-v2'}")
    targets = [folder / f"{k // 1000:03d}" / f"photo{k:06d}.jpg" for k in range(n)]
    todo = [(str(sources[k % len(sources)]), t, k) for k, t in enumerate(targets) if not t.exists()]
    for t in {t.parent for t in targets}:
        t.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        for _ in tqdm(pool.map(_make, todo, chunksize=64), total=len(todo), desc="archive", unit="photo"):
            pass
    return targets


def screen(archive: Path, out: Path, *extra: str) -> dict:
    """One `predict --out` run from scratch: wall seconds (start-up included) and the rate it reports."""
    out.unlink(missing_ok=True)
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mpoxscan.cli", "predict", str(archive), "--out", str(out), *extra],
                          capture_output=True, text=True)
    wall = time.perf_counter() - started
    m = re.search(r"(\d+) photos answered and (\d+) could not be read \(([\d.]+) per second\)", proc.stdout)
    if proc.returncode != 0 or not m:
        raise SystemExit(f"predict {' '.join(extra)} failed: {proc.stdout[-500:]} {proc.stderr[-2000:]}")
    n = int(m.group(1)) + int(m.group(2))  # every photo of this run, unreadable ones included (a row each)
    return {"args": " ".join(extra) or "(single process, all cores)", "photos": n, "wall_seconds": round(wall, 1),
            "photos_per_second_wall": round(n / wall, 1), "photos_per_second_screening": float(m.group(3))}


def kill_and_resume(archive: Path, out: Path, n: int, workers: int) -> dict:
    """Start a Ray run, kill -9 its whole process group at about a third, resume, and count the damage."""
    out.unlink(missing_ok=True)
    args = [sys.executable, "-m", "mpoxscan.cli", "predict", str(archive), "--out", str(out), "--ray", "--workers",
            str(workers)]
    job = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    while not out.exists() or out.stat().st_size < 1:
        time.sleep(0.5)
    while sum(1 for _ in open(out)) < n // 3 + 1:
        time.sleep(0.5)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    time.sleep(2)
    before = sum(1 for _ in open(out, "rb") if _.endswith(b"\n")) - 1  # whole rows, header not counted
    proc = subprocess.run(args, capture_output=True, text=True)
    m = re.search(r"(\d+) photos answered and (\d+) could not be read .*; (\d+) already in the file", proc.stdout)
    import csv

    with open(out, newline="") as f:
        images = [r["image"] for r in csv.DictReader(f)]
    return {"killed_after_rows": before, "resumed_answered": int(m.group(1)) + int(m.group(2)),
            "resumed_skipped": int(m.group(3)),
            "rows_at_end": len(images), "distinct_photos": len(set(images)), "photos": n,
            "answered_twice": len(images) - len(set(images)), "never_answered": n - len(set(images))}


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    names = [r["args"].replace("--ray --workers", "Ray, workers").replace("--threads", "threads") for r in runs]
    ax.barh(names, [r["photos_per_second_wall"] for r in runs], color="#4c72b0")
    for y, r in enumerate(runs):
        ax.text(r["photos_per_second_wall"], y, f" {r['photos_per_second_wall']:.0f}", va="center")
    ax.set_xlabel("photos per second (whole run, start-up included)")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=20000)
    parser.add_argument("--archive", type=Path, default=HERE.parent / "runs" / "batch-archive")
    parser.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    import ray  # noqa: F401 - fail early: the Ray runs are the point

    cores = os.cpu_count() or 1
    started = time.perf_counter()
    build_archive(args.data, args.archive, args.photos)
    built = time.perf_counter() - started
    scratch = args.archive.parent / "batch-results"
    scratch.mkdir(exist_ok=True)
    runs = [screen(args.archive, scratch / "single.csv"),
            screen(args.archive, scratch / "single1.csv", "--threads", "1")]
    for workers in sorted({1, cores}):
        runs.append(screen(args.archive, scratch / f"ray{workers}.csv", "--ray", "--workers", str(workers)))
        print(json.dumps(runs[-1]), flush=True)
    single1 = runs[1]["photos_per_second_wall"]
    ray1 = next(r for r in runs if r["args"] == "--ray --workers 1")["photos_per_second_wall"]
    rayn = next(r for r in runs if r["args"] == f"--ray --workers {cores}")["photos_per_second_wall"]
    resume = kill_and_resume(args.archive, scratch / "resume.csv", args.photos, cores)
    result = {"photos": args.photos, "photo_size": list(PHONE), "cores": cores, "archive_seconds": round(built, 1),
              "runs": runs,
              "ray_1_worker_vs_single_process_1_thread": round(ray1 / single1, 3),
              "ray_scaling_1_to_all_cores": round(rayn / ray1, 3),
              "ray_all_cores_vs_single_process_all_cores": round(rayn / runs[0]["photos_per_second_wall"], 3),
              "kill_and_resume": resume}
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "batch.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(runs, args.results / "batch.png")
    lines = ["# Archive screening: single process against Ray", "",
             f"`benchmarks/batch_bench.py`: {args.photos} generated phone photos ({PHONE[0]} x {PHONE[1]} JPEG, from "
             f"the MSLD v2.0 photos), the bundled model, this machine ({cores} cores). Whole runs of `mpoxscan "
             "predict ARCHIVE --out results.csv ...` from a cold start.", "",
             "| run | photos | seconds | photos/s (whole run) | photos/s (screening only) |", "|---|---|---|---|---|"]
    lines += [f"| {r['args']} | {r['photos']} | {r['wall_seconds']} | {r['photos_per_second_wall']} | "
              f"{r['photos_per_second_screening']} |" for r in runs]
    lines += ["", f"- Ray with 1 worker (1 thread) against one process with 1 thread: "
                  f"{result['ray_1_worker_vs_single_process_1_thread']:.2f}x.",
              f"- Ray from 1 worker to {cores}: {result['ray_scaling_1_to_all_cores']:.2f}x; Ray on all cores against "
              f"one process on all cores: {result['ray_all_cores_vs_single_process_all_cores']:.2f}x.",
              f"- Killed (kill -9 of the whole process group) after {resume['killed_after_rows']} rows and resumed: "
              f"{resume['resumed_skipped']} skipped, {resume['resumed_answered']} answered; at the end "
              f"{resume['distinct_photos']} of {resume['photos']} photos answered, {resume['answered_twice']} twice, "
              f"{resume['never_answered']} never.", "", "![throughput](batch.png)", ""]
    (args.results / "batch.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
