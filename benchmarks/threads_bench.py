"""Time the phone page's network (onnxruntime-web's session.run on the bundled model) with 1 thread and with more,
in the same headless Chromium on this machine, taking turns.

    .venv/bin/python benchmarks/threads_bench.py [--threads 1,2] [--runs 41] [--rounds 2]

The page picks its threads itself (app.js: the cores but one, up to 4, where it is cross-origin isolated). To give
it N threads, the bench tells the page that the machine has N + 1 cores (the DevTools protocol's hardware-concurrency
override), and checks that the page took N. Each round loads the page once per thread count, in turn, and times
--runs runs on random inputs after the page's own warm-up run. Results: benchmarks/results/web/threads.json and
threads.md (median and the 10th and 90th percentiles per thread count, all rounds together).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "web"

RUNS = """
const done = arguments[arguments.length - 1], runs = arguments[0];
(async () => {
  const s = meta.preprocessing.input_size, times = [];
  for (let i = 0; i < runs; i++) {
    const x = new Float32Array(3 * s * s).map(() => Math.random());
    const t0 = performance.now();
    await session.run({ image: new ort.Tensor("float32", x, [1, 3, s, s]) });
    times.push(performance.now() - t0);
  }
  done({ times, threads: ort.env.wasm.numThreads, isolated: self.crossOriginIsolated });
})().catch((e) => done(String(e)));
"""


def main() -> None:
    from mpoxscan.deploy.runtime import bundled_model
    from mpoxscan.web.app import create_app
    from mpoxscan.web.settings import Settings
    from mpoxscan.web.testing import ServerThread, headless_chromium

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default="1,2", help="thread counts to compare")
    parser.add_argument("--runs", type=int, default=41)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    counts = [int(t) for t in args.threads.split(",")]
    app = create_app(Settings(model=bundled_model(), data_dir=Path(tempfile.mkdtemp(prefix="mpoxscan-threads-"))))
    times: dict[int, list[float]] = {n: [] for n in counts}
    with ServerThread(app) as server:
        for _ in range(args.rounds):
            for n in counts:
                driver = headless_chromium(Path(tempfile.mkdtemp(prefix="mpoxscan-chromium-")), window="412,915")
                try:
                    driver.execute_cdp_cmd("Emulation.setHardwareConcurrencyOverride", {"hardwareConcurrency": n + 1})
                    driver.get(server.url + "/")
                    while not driver.execute_script("return document.body.dataset.ready"):
                        time.sleep(0.05)
                    got = driver.execute_async_script(RUNS, args.runs)
                finally:
                    driver.quit()
                if isinstance(got, str):
                    raise SystemExit(f"threads_bench: the page failed: {got}")
                if got["threads"] != n or not got["isolated"]:
                    raise SystemExit(f"threads_bench: asked for {n} threads, the page took {got['threads']} "
                                     f"(cross-origin isolated: {got['isolated']})")
                times[n] += got["times"]
    rows = {n: {"runs": len(t), "median_ms": round(float(np.median(t)), 1),
                "p10_ms": round(float(np.percentile(t, 10)), 1), "p90_ms": round(float(np.percentile(t, 90)), 1)}
            for n, t in times.items()}
    out = {"threads": rows, "cores": os.cpu_count(), "measured": time.strftime("%Y-%m-%d %H:%M")}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "threads.json").write_text(json.dumps(out, indent=2) + "\n")
    md = ["# The page's network on 1 thread and more", "",
          f"Measured by `benchmarks/threads_bench.py` in headless Chromium on this {out['cores']}-core machine, "
          f"{out['measured']}: {args.rounds} page loads per thread count, taking turns, {args.runs} runs of the "
          "bundled model on random inputs each, after the page's warm-up run.", "",
          "| threads | runs | median, ms | 10th percentile, ms | 90th percentile, ms |", "|---|---|---|---|---|"]
    md += [f"| {n} | {r['runs']} | {r['median_ms']} | {r['p10_ms']} | {r['p90_ms']} |" for n, r in rows.items()]
    md.append("")
    (RESULTS / "threads.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
