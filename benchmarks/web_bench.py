"""Measure the phone page's figures the README quotes: first-visit download and in-browser screening time.

    .venv/bin/python benchmarks/web_bench.py [--data ../shared/data] [--photos 20]

Starts `mpoxscan serve` on the bundled model in this process, opens the page in a phone-sized headless Chromium
with an empty cache, and records (1) the bytes the first visit transferred (page, scripts, wasm, model: the
Resource Timing API's transferSize), and (2) the on-device time of `session.run` for each of N real MSLD v2.0
photos, one after another. Results: benchmarks/results/web/web.json and web.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "web"


def main() -> None:
    from selenium.webdriver.common.by import By

    from mpoxscan.deploy.runtime import bundled_model
    from mpoxscan.web.app import Settings, create_app
    from mpoxscan.web.testing import ServerThread, headless_chromium

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data")
    parser.add_argument("--photos", type=int, default=20)
    args = parser.parse_args()
    photos = sorted((args.data / "msld-v2").glob("*/*.jpg"))[:: max(1, 750 // args.photos)][: args.photos]
    settings = Settings(model=bundled_model(), data_dir=Path(tempfile.mkdtemp(prefix="mpoxscan-web-bench-")))
    server = ServerThread(create_app(settings)).start()
    port = int(server.url.rsplit(":", 1)[1])
    driver = headless_chromium(Path(tempfile.mkdtemp(prefix="mpoxscan-chromium-")), window="412,915")
    times, answers = [], []
    try:
        started = time.perf_counter()
        driver.get(f"http://127.0.0.1:{port}/")
        while not driver.execute_script("return document.body.dataset.ready"):
            time.sleep(0.05)
        ready_s = time.perf_counter() - started
        resources = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => [e.name, e.transferSize, e.encodedBodySize])"
            ".concat([[location.href, performance.getEntriesByType('navigation')[0].transferSize, 0]])")
        for photo in photos:
            driver.execute_script("window.mpoxscanLast = null")
            driver.find_element(By.ID, "photo").send_keys(str(photo))
            while True:
                result = driver.execute_script("return window.mpoxscanLast")
                if result:
                    break
                if not driver.find_element(By.ID, "quality").get_attribute("hidden"):
                    driver.find_element(By.ID, "anyway").click()
                time.sleep(0.02)
            times.append(result["ms"])
            answers.append(result["computed"])
    finally:
        driver.quit()
        server.stop()
    total = sum(r[1] or r[2] for r in resources)
    out = {"first_visit_bytes": int(total), "first_visit_mb": round(total / 1e6, 2),
           "largest": sorted(([Path(r[0]).name, round((r[1] or r[2]) / 1e6, 2)] for r in resources), key=lambda x: -x[1])[:4],
           "page_ready_s": round(ready_s, 2), "photos": len(times), "computed": sorted(set(answers)),
           "screen_ms": {"median": round(float(np.median(times)), 1), "p95": round(float(np.percentile(times, 95)), 1),
                         "first": round(times[0], 1)},
           "api_screen_requests": settings.counters["api_screen"], "measured": time.strftime("%Y-%m-%d %H:%M")}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "web.json").write_text(json.dumps(out, indent=2) + "\n")
    md = ["# Phone page: download and in-browser screening", "", "Measured by `benchmarks/web_bench.py` in headless "
          f"Chromium (phone-sized window, empty cache) on this machine, {out['measured']}.", "",
          "| figure | value |", "|---|---|", f"| first visit, bytes transferred | {out['first_visit_mb']} MB |",
          f"| largest files | {', '.join(f'{n} {mb} MB' for n, mb in out['largest'])} |",
          f"| page ready (model loaded) | {out['page_ready_s']} s |",
          f"| on-device screening, {out['photos']} real photos | median {out['screen_ms']['median']} ms, p95 "
          f"{out['screen_ms']['p95']} ms, first {out['screen_ms']['first']} ms |",
          f"| requests to /api/screen | {out['api_screen_requests']} |", ""]
    (RESULTS / "web.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
