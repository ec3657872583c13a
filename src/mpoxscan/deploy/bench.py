"""`mpoxscan bench`: what an exported model costs on this machine (the paper's footprint and timing table)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mpoxscan.deploy.runtime import Screener


def latencies(screener: Screener, batch: np.ndarray, runs: int, warmup: int) -> np.ndarray:
    """Seconds per ``screener.run(batch)``, ``runs`` times after ``warmup`` untimed runs."""
    for _ in range(warmup):
        screener.run(batch)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        screener.run(batch)
        times.append(time.perf_counter() - t)
    return np.array(times)


def _probe(model: Path, image: Path, threads: int) -> tuple[float, dict]:
    t = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "mpoxscan.deploy.probe", str(model), str(image), str(threads)],
                          capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - t
    if done.returncode != 0:
        raise RuntimeError(f"probe failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
    return seconds, json.loads(done.stdout)


def bench_model(path: Path, runs: int = 50, warmup: int = 5, cold_runs: int = 3, seed: int = 0) -> dict:
    """Size, parameters, latency (1 and 2 threads), batch-16 throughput, and the cold start (process start to
    answer) and peak memory of a fresh process running `mpoxscan predict` on a 12-megapixel JPEG, for one file."""
    from PIL import Image

    path = Path(path)
    rng = np.random.default_rng(seed)
    first = Screener(path, threads=1)
    size = first.input_size
    one = rng.standard_normal((1, 3, size, size)).astype(np.float32)
    row = {"model": str(path), "precision": first.meta.get("precision"), "architecture": first.meta.get("architecture"),
           "bytes": path.stat().st_size, "parameters": first.meta.get("parameters"), "input_size": size}
    for threads in (1, 2):
        screener = first if threads == 1 else Screener(path, threads=2)
        t = latencies(screener, one, runs, warmup) * 1000
        row[f"latency_ms_{threads}t"] = {"median": float(np.median(t)), "p95": float(np.percentile(t, 95))}
    sixteen = rng.standard_normal((16, 3, size, size)).astype(np.float32)
    t = latencies(Screener(path, threads=2), sixteen, max(3, runs // 10), 1)
    row["throughput_batch16_img_s"] = float(16 / np.median(t))
    with tempfile.TemporaryDirectory(prefix="mpoxscan-bench-") as tmp:
        photo = Path(tmp) / "photo.jpg"  # a phone-sized JPEG, so that decoding and resizing count too
        Image.fromarray(rng.integers(0, 255, (3024, 4032, 3), dtype=np.uint8)).save(photo, quality=90)
        cold = [_probe(path, photo, 2) for _ in range(cold_runs)]
    row["cold_start_s"] = float(np.median([c[0] for c in cold]))
    row["peak_rss_mb"] = float(np.median([c[1]["peak_rss_mb"] for c in cold]))
    row["torch_imported"] = any(c[1]["torch_imported"] for c in cold)
    return row


def plot(rows: list[dict], path: Path) -> Path:
    """Size and latency side by side, one bar per model file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [label(r) for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 0.5 * len(rows) + 2))
    y = np.arange(len(rows))
    axes[0].barh(y, [r["bytes"] / 1e6 for r in rows], color="tab:blue")
    axes[0].set_xlabel("size on disk (MB)")
    for k, threads in enumerate((1, 2)):
        med = [r[f"latency_ms_{threads}t"]["median"] for r in rows]
        p95 = [r[f"latency_ms_{threads}t"]["p95"] for r in rows]
        axes[1].barh(y + (k - 0.5) * 0.4, med, height=0.4, xerr=[np.zeros(len(rows)), np.subtract(p95, med)],
                     label=f"{threads} thread{'s' if threads > 1 else ''}")
    axes[1].set_xlabel("latency, one image (ms; bar: median, whisker: p95)")
    axes[1].legend()
    axes[2].barh(y, [r["peak_rss_mb"] for r in rows], color="tab:green")
    axes[2].set_xlabel("peak memory, fresh process (MB)")
    for ax in axes:
        ax.set_yticks(y, labels if ax is axes[0] else [""] * len(rows))
        ax.invert_yaxis()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def label(row: dict) -> str:
    if row.get("label"):
        return row["label"]
    return f"{row['architecture']} {row['precision']}" if row.get("architecture") else Path(row["model"]).name


def table(rows: list[dict]) -> str:
    """A Markdown table of :func:`bench_model` rows."""
    head = ("| model | size (MB) | parameters | latency 1 thread, median / p95 (ms) | latency 2 threads (ms) | "
            "batch 16 (img/s) | cold start (s) | peak memory (MB) |\n|---|---:|---:|---:|---:|---:|---:|---:|")
    lines = [head]
    for r in rows:
        params = f"{r['parameters'] / 1e6:.2f} M" if r.get("parameters") else "-"
        lines.append(f"| {label(r)} | {r['bytes'] / 1e6:.2f} | {params} | "
                     f"{r['latency_ms_1t']['median']:.1f} / {r['latency_ms_1t']['p95']:.1f} | "
                     f"{r['latency_ms_2t']['median']:.1f} / {r['latency_ms_2t']['p95']:.1f} | "
                     f"{r['throughput_batch16_img_s']:.0f} | {r['cold_start_s']:.2f} | {r['peak_rss_mb']:.0f} |")
    return "\n".join(lines)
