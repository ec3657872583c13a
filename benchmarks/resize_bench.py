"""Time the phone page's exact resize (resize.js: Pillow's reduce + bicubic, pixel for pixel) on 12-megapixel photos,
against the version before issue 28, in the same browser on the same decoded photos, taking turns (so that a busy
machine slows both alike).

    .venv/bin/python benchmarks/resize_bench.py [--data ../shared/data] [--photos 5] [--repeats 7] [--before main]

Five MSLD v2.0 photos enlarged to 4032 x 3024 (landscape) and 3024 x 4032 (portrait) as JPEG; each is decoded once
in headless Chromium (phone-sized), then resized by this version (WebAssembly kernels), by this version with its
JavaScript loops, and by the version of resize.js at git revision --before, in turns, --repeats times each; every
output is compared with Pillow's (Preprocessing.resize_crop).
Results: benchmarks/results/web/resize.json and resize.md.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results" / "web"

TIME = """
const done = arguments[arguments.length - 1], [data, repeats] = [arguments[0], arguments[1]];
(async () => {
  const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
  const bitmap = await createImageBitmap(new Blob([bytes], { type: "image/jpeg" }), { imageOrientation: "from-image" });
  const p = meta.preprocessing, runs = { now: [], script: [], before: [] }, out = {};
  // this version (its WebAssembly kernels), the same with its JavaScript loops, the reference: in turns
  const ways = [["now", MPOXSCAN_RESIZE, {}], ["script", MPOXSCAN_RESIZE, { script: true }],
                ["before", window.RESIZE_BEFORE, {}]];
  let source = null, kernel = null;
  for (let i = 0; i < repeats; i++) {
    for (let k = 0; k < ways.length; k++) {
      const [name, impl, options] = ways[(i + k) % ways.length];
      const t0 = performance.now();
      const square = await impl.resizeCrop(bitmap, p.input_size, p.crop_pct ?? 1, options);
      runs[name].push(performance.now() - t0);
      out[name] = Array.from(square.data);
      if (name === "now") [source, kernel] = [MPOXSCAN_RESIZE.lastSource(), MPOXSCAN_RESIZE.lastKernel()];
    }
  }
  done({ runs, now: out.now, script: out.script, before: out.before, size: [bitmap.width, bitmap.height],
         source, kernel });
})().catch((e) => done(String(e)));
"""


def main() -> None:
    from PIL import Image

    from mpoxscan.deploy.runtime import Screener, bundled_model
    from mpoxscan.images import load_image
    from mpoxscan.web.app import create_app
    from mpoxscan.web.settings import Settings
    from mpoxscan.web.testing import ServerThread, headless_chromium

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--photos", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--before", default="main", help="the git revision whose resize.js is the reference")
    args = parser.parse_args()
    before = subprocess.run(["git", "show", f"{args.before}:src/mpoxscan/web/static/resize.js"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout
    every = sorted((args.data / "msld-v2").glob("*/*.jpg"))
    folder = Path(tempfile.mkdtemp(prefix="mpoxscan-resize-"))
    photos = []
    for k, path in enumerate(every[:: max(1, len(every) // args.photos)][: args.photos]):
        size = (4032, 3024) if k % 2 == 0 else (3024, 4032)
        photos.append(folder / f"{path.stem}-{size[0]}x{size[1]}.jpg")
        Image.open(path).convert("RGB").resize(size, Image.Resampling.BICUBIC).save(photos[-1], quality=92)
    preprocessing = Screener(bundled_model()).preprocessing
    app = create_app(Settings(model=bundled_model(), data_dir=Path(tempfile.mkdtemp(prefix="mpoxscan-resize-data-"))))
    rows = []
    with ServerThread(app) as server:
        driver = headless_chromium(Path(tempfile.mkdtemp(prefix="mpoxscan-chromium-")), window="412,915")
        try:
            driver.get(server.url + "/")
            while not driver.execute_script("return document.body.dataset.ready"):
                time.sleep(0.05)
            # The reference, loaded beside this version under another name (a driver's script: no page ships it).
            driver.execute_script(before.replace('"use strict";', "") + "\nwindow.RESIZE_BEFORE = MPOXSCAN_RESIZE;")
            for photo in photos:
                got = driver.execute_async_script(TIME, base64.b64encode(photo.read_bytes()).decode(), args.repeats)
                if isinstance(got, str):
                    raise RuntimeError(got)
                expected = np.asarray(preprocessing.resize_crop(load_image(photo)), np.int16)
                diffs = {name: int(np.abs(np.array(got[name], np.int16).reshape(224, 224, 4)[..., :3] - expected).max())
                         for name in ("now", "script", "before")}
                rows.append({"photo": photo.name, "size": got["size"], "read_through": got["source"],
                             "kernels": got["kernel"], "max_pixel_difference_from_pillow": diffs,
                             **{f"ms_{name}": [round(t, 1) for t in got["runs"][name]]
                                for name in ("now", "script", "before")}})
        finally:
            driver.quit()
    now = [statistics.median(r["ms_now"]) for r in rows]
    script = [statistics.median(r["ms_script"]) for r in rows]
    old = [statistics.median(r["ms_before"]) for r in rows]
    out = {"photos": rows, "median_ms_now": round(statistics.median(now), 1),
           "median_ms_script": round(statistics.median(script), 1),
           "median_ms_before": round(statistics.median(old), 1),
           "speed_up": round(statistics.median(o / n for o, n in zip(old, now)), 2),
           "exact": all(v == 0 for r in rows for v in r["max_pixel_difference_from_pillow"].values()),
           "before_revision": args.before, "measured": time.strftime("%Y-%m-%d %H:%M")}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "resize.json").write_text(json.dumps(out, indent=2) + "\n")
    md = ["# The page's exact resize of a 12-megapixel photo", "",
          f"Measured by `benchmarks/resize_bench.py` in headless Chromium on this machine, {out['measured']}: each "
          f"photo decoded once, then resized by this version (its loops in WebAssembly where the browser runs them: "
          f"column 'kernels'), by this version with its JavaScript loops (`{{script: true}}`, the way of a browser "
          f"without WebAssembly SIMD) and by resize.js of `{args.before}`, taking turns, {args.repeats} times each; "
          f"medians.", "",
          "| photo | size | read through | kernels | this version, ms | its JavaScript loops, ms | before, ms "
          "| differs from Pillow (max, 0-255: this / JS loops / before) |",
          "|---|---|---|---|---|---|---|---|"]
    for row, n, j, o in zip(rows, now, script, old):
        d = row["max_pixel_difference_from_pillow"]
        md.append(f"| {row['photo']} | {row['size'][0]} x {row['size'][1]} | {row['read_through']} | {row['kernels']} "
                  f"| {n:.1f} | {j:.1f} | {o:.1f} | {d['now']} / {d['script']} / {d['before']} |")
    md += ["", f"Median over the photos: **{out['median_ms_now']} ms** (its JavaScript loops: "
               f"{out['median_ms_script']} ms; before: {out['median_ms_before']} ms), {out['speed_up']} times as fast "
               f"as before; all three identical to Pillow: {'yes' if out['exact'] else 'NO'}.", ""]
    (RESULTS / "resize.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
