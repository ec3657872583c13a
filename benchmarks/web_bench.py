"""Measure the phone page's figures the README quotes: first-visit download and in-browser screening time.

    .venv/bin/python benchmarks/web_bench.py [--data ../shared/data] [--photos 20] [--agreement 150] [--runs 3]

Starts `mpoxscan serve` on the bundled model in this process, opens the page in a phone-sized headless Chromium
with an empty cache, and records (1) the bytes the first visit transferred (page, scripts, wasm, model: the
Resource Timing API's transferSize), (2) the on-device time of `session.run` for each of N real MSLD v2.0
photos, one after another, and (3) how far the browser's answers are from ONNX Runtime in Python on the same files
(every other photo that is not already 224 x 224, and five photos enlarged to 12 MP, which also time the page's
resize at a phone's size: each screened --phone-repeats times, one after another, for a steadier median). The page
runs the network on as many threads as it is given (cross-origin isolated, up to 4 cores): the results say how many.
The timings vary from one browser to the next on a shared 2-core machine (a visit's median by 20 % and more), so
--runs visits, each in a fresh browser, are pooled, and each visit's medians recorded. Results: benchmarks/results/web/web.json and web.md.
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
    from mpoxscan.deploy.runtime import bundled_model
    from mpoxscan.web.app import create_app
    from mpoxscan.web.settings import Settings
    from mpoxscan.web.testing import ServerThread, count_requests

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data")
    parser.add_argument("--photos", type=int, default=20)
    parser.add_argument("--agreement", type=int, default=400,
                        help="at most this many photos that need resizing are compared with Python (0: none)")
    parser.add_argument("--phone-repeats", type=int, default=10, help="screenings of each 12-MP photo")
    parser.add_argument("--runs", type=int, default=3,
                        help="visits, each in a fresh browser (the timings pooled; each visit's medians recorded)")
    args = parser.parse_args()
    every = sorted((args.data / "msld-v2").glob("*/*.jpg"))
    photos = every[:: max(1, 750 // args.photos)][: args.photos]
    from PIL import Image

    # Compared with Python: the photos the page must resize (most MSLD photos are already 224 x 224, where the
    # browser's filter and Pillow's cannot differ).
    compared = [p for p in every if p not in photos and Image.open(p).size != (224, 224)][: args.agreement]
    # A phone's photo is 12 MP: five of the photos enlarged to 4032 x 3024 time the page's exact resize at that size.
    phone_dir = Path(tempfile.mkdtemp(prefix="mpoxscan-12mp-"))
    phone = []
    for k, path in enumerate(photos[:5]):
        phone.append(phone_dir / f"12mp-{path.stem}.jpg")
        Image.open(path).convert("RGB").resize((4032, 3024), Image.Resampling.BICUBIC).save(phone[-1], quality=92)
    settings = Settings(model=bundled_model(), data_dir=Path(tempfile.mkdtemp(prefix="mpoxscan-web-bench-")))
    app = create_app(settings)
    requests = count_requests(app)
    server = ServerThread(app).start()
    times, prep, phone_times, answers, per_run = [], [], [], [], []
    try:
        for run in range(args.runs):
            # each run in a fresh browser with an empty cache; the download figures are the first run's
            got = visit(args, server, photos, phone, compared)
            if run == 0:
                ready_s, isolated, threads, resources, browser = got["ready_s"], got["isolated"], got["threads"], \
                    got["resources"], got["browser"]
            times += got["times"]
            prep += got["prep"]
            phone_times += got["phone_times"]
            answers += got["answers"]
            per_run.append({"real_median": round(float(np.median(got["times"])), 1),
                            "phone_12mp_median": round(float(np.median([t for t, _ in got["phone_times"]])), 1),
                            "phone_12mp_resize_median": round(float(np.median([r for _, r in got["phone_times"]])),
                                                              1)})
    finally:
        server.stop()
    agreement = compare_with_python({p: browser[p] for p in compared + phone}) if compared else None
    total = sum(r[1] or r[2] for r in resources)
    out = {"first_visit_bytes": int(total), "first_visit_mb": round(total / 1e6, 2),
           "largest": sorted(([Path(r[0]).name, round((r[1] or r[2]) / 1e6, 2)] for r in resources), key=lambda x: -x[1])[:4],
           "page_ready_s": round(ready_s, 2), "cross_origin_isolated": isolated, "network_threads": threads,
           "photos": len(times), "computed": sorted(set(answers)),
           "screen_ms": {"median": round(float(np.median(times)), 1), "p95": round(float(np.percentile(times, 95)), 1),
                         "first": round(times[0], 1), "of_which_resize_median": round(float(np.median(prep)), 1)},
           "phone_12mp_ms": {"median": round(float(np.median([t for t, _ in phone_times])), 1),
                             "resize_median": round(float(np.median([r for _, r in phone_times])), 1),
                             "network_median": round(float(np.median([t - r for t, r in phone_times])), 1),
                             "photos": len(phone), "screenings": len(phone_times)},
           "runs": per_run,
           "api_screen_requests": requests["/api/screen"], "browser_vs_python": agreement,
           "measured": time.strftime("%Y-%m-%d %H:%M")}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "web.json").write_text(json.dumps(out, indent=2) + "\n")
    md = ["# Phone page: download and in-browser screening", "", "Measured by `benchmarks/web_bench.py` in headless "
          f"Chromium (phone-sized window, empty cache) on this machine, {out['measured']}.", "",
          "| figure | value |", "|---|---|", f"| first visit, bytes transferred | {out['first_visit_mb']} MB |",
          f"| largest files | {', '.join(f'{n} {mb} MB' for n, mb in out['largest'])} |",
          f"| page ready (model loaded) | {out['page_ready_s']} s |",
          f"| network threads in the page | {threads} (cross-origin isolated: {'yes' if isolated else 'no'}) |",
          f"| on-device screening (resize + network), {out['photos']} real photos | median "
          f"{out['screen_ms']['median']} ms, p95 {out['screen_ms']['p95']} ms, first {out['screen_ms']['first']} ms "
          f"(resize median {out['screen_ms']['of_which_resize_median']} ms) |",
          f"| the same for 12-MP photos (4032 x 3024, {out['phone_12mp_ms']['photos']} of them enlarged, "
          f"{out['phone_12mp_ms']['screenings']} screenings) | median "
          f"{out['phone_12mp_ms']['median']} ms, of which the exact resize {out['phone_12mp_ms']['resize_median']} ms "
          f"and the network {out['phone_12mp_ms']['network_median']} ms |",
          f"| each visit (fresh browser): real photos' / 12-MP photos' median, ms | "
          + ", ".join(f"{r['real_median']} / {r['phone_12mp_median']}" for r in per_run) + " |",
          f"| requests to /api/screen | {out['api_screen_requests']} |"]
    if agreement:
        md.append(f"| browser vs ONNX Runtime in Python, {agreement['photos']} photos that need resizing (real ones "
                  f"not 224 x 224, and the 12-MP ones) | same top class "
                  f"{agreement['same_top_class']}/{agreement['photos']}, same screening verdict "
                  f"{agreement['same_verdict']}/{agreement['photos']}, class probabilities |dp| mean "
                  f"{agreement['mean_abs_dp']:.4f}, max {agreement['max_abs_dp']:.3f} |")
    md.append("")
    for d in (agreement or {}).get("different_verdicts", []):
        md.append(f"- different verdict: `{Path(d['photo']).name}`: browser {d['browser'][0]} ({d['browser'][1]}), "
                  f"Python {d['python'][0]} ({d['python'][1]}); measures browser {d['browser_measures']}, Python "
                  f"{d['python_measures']}")
    md.append("")
    (RESULTS / "web.md").write_text("\n".join(md))
    print("\n".join(md))


def visit(args, server, photos: list[Path], phone: list[Path], compared: list[Path]) -> dict:
    """One visit of the page in a fresh phone-sized browser (empty cache): the download, then every photo screened
    on the device, one after another."""
    from selenium.webdriver.common.by import By

    from mpoxscan.web.testing import headless_chromium

    driver = headless_chromium(Path(tempfile.mkdtemp(prefix="mpoxscan-chromium-")), window="412,915")
    times, prep, phone_times, answers, browser = [], [], [], [], {}
    try:
        started = time.perf_counter()
        driver.get(server.url + "/")
        while not driver.execute_script("return document.body.dataset.ready"):
            time.sleep(0.05)
        ready_s = time.perf_counter() - started
        isolated, threads = driver.execute_script("return [self.crossOriginIsolated, ort.env.wasm.numThreads]")
        resources = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => [e.name, e.transferSize, e.encodedBodySize])"
            ".concat([[location.href, performance.getEntriesByType('navigation')[0].transferSize, 0]])")
        for photo in photos + phone * args.phone_repeats + compared:
            driver.execute_script("window.mpoxscanLast = null")
            driver.find_element(By.ID, "photo").send_keys(str(photo))
            while True:
                result = driver.execute_script("return window.mpoxscanLast")
                if result:
                    break
                if driver.execute_script("return document.body.dataset.state") == "error":
                    raise RuntimeError(f"{photo.name}: " + driver.find_element(By.ID, "error").text)
                time.sleep(0.02)
            browser[photo] = result
            if photo in photos:
                times.append(result["ms"])
                prep.append(result["prepMs"])
            elif photo in phone:
                phone_times.append((result["ms"], result["prepMs"]))
            answers.append(result["computed"])
    finally:
        driver.quit()
    return {"ready_s": ready_s, "isolated": isolated, "threads": threads, "resources": resources, "browser": browser,
            "times": times, "prep": prep, "phone_times": phone_times, "answers": answers}


def compare_with_python(browser: dict) -> dict:
    """The browser's answers against Screener (Pillow's bicubic resize, ONNX Runtime) on the same files."""
    from mpoxscan.deploy.runtime import Screener, bundled_model
    from mpoxscan.images import load_image

    screener = Screener(bundled_model())
    same_top = same_verdict = 0
    diffs, disagreements = [], []
    for path, result in browser.items():
        expected = screener.screen(load_image(path))
        got = np.array([result["probabilities"][c] for c in screener.classes])
        want = np.array([expected.probabilities[c] for c in screener.classes])
        same_top += result["predicted"] == expected.predicted
        same_verdict += result["answer"] == expected.answer  # positive, negative or cannot tell
        if result["answer"] != expected.answer:  # which gate: the reasons and the measures behind them
            disagreements.append({"photo": str(path), "browser": [result["answer"], result.get("reason")],
                                  "python": [expected.answer, expected.reason],
                                  "browser_measures": result.get("measures"), "python_measures": expected.measures})
        diffs.append(np.abs(got - want))
    diffs = np.array(diffs)
    return {"photos": len(browser), "same_top_class": int(same_top), "same_verdict": int(same_verdict),
            "mean_abs_dp": round(float(diffs.mean()), 5), "max_abs_dp": round(float(diffs.max()), 4),
            "different_verdicts": disagreements}


if __name__ == "__main__":
    main()
