"""Measure the phone page on slow mobile data (issue 28): bytes of a first visit, time until the page is ready to
screen on an emulated 3G link, and a repeat visit; and how much each of the page's files shrinks.

    .venv/bin/python benchmarks/wire_bench.py [--down-kbps 1600] [--up-kbps 750] [--rtt-ms 150] [--runs 2]

The app is served over https (a throwaway certificate that this Chromium trusts by its key: browsers offer Brotli
only over https), in this process, on the bundled model. Headless Chromium at a phone's size, with a fresh profile
per run, throttled with the DevTools protocol (Network.emulateNetworkConditions: the given download and upload
rates, the given round trip added to every request). Each run: (1) a first visit, ready to screen when the page
says so (the on-device model loaded and warmed up: window.mpoxscanReadyAt, ms since the visit began), its bytes
counted by the server (every response body the app sent, the service worker's installation included); (2) a
repeat visit once the service worker holds the page, on the same link. The same first visit is measured with the
browser asking for no compression (Accept-Encoding: identity), as the page went before this issue. Compression:
each file's bytes as is, with Brotli (the quality the app uses, and quality 9 for the two large files, timed) and
gzip. Results: benchmarks/results/web/wire.json and wire.md.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "web"


def counting(app) -> Counter:
    """Bytes of every response body the app sends (the service worker's fetches included), by path."""
    sent: Counter = Counter()

    class CountBytes:
        def __init__(self, inner) -> None:
            self.inner = inner

        async def __call__(self, scope, receive, send) -> None:
            if scope["type"] != "http":
                return await self.inner(scope, receive, send)

            async def counted(message) -> None:
                if message["type"] == "http.response.body":
                    sent[scope["path"]] += len(message.get("body", b""))
                await send(message)

            await self.inner(scope, receive, counted)

    app.add_middleware(CountBytes)
    return sent


def visit(driver, url: str, timeout_s: float = 300) -> float:
    """Open the page and wait until it is ready to screen: the seconds since the visit began (the page's own clock)."""
    driver.get(url)
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        at = driver.execute_script("return document.body && document.body.dataset.ready ? window.mpoxscanReadyAt : null")
        if at is not None:
            return at / 1000
        time.sleep(0.05)
    raise RuntimeError(f"the page was not ready within {timeout_s} s")


def throttle(driver, args) -> None:
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.emulateNetworkConditions", {
        "offline": False, "latency": args.rtt_ms, "downloadThroughput": args.down_kbps * 1000 / 8,
        "uploadThroughput": args.up_kbps * 1000 / 8, "connectionType": "cellular3g"})


def one_run(url: str, sent: Counter, spki: str, args, identity: bool = False) -> dict:
    from mpoxscan.web.testing import headless_chromium

    profile = Path(tempfile.mkdtemp(prefix="mpoxscan-wire-"))
    driver = headless_chromium(profile, window="412,915", extra_args=(f"--ignore-certificate-errors-spki-list={spki}",))
    try:
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": 412, "height": 915, "deviceScaleFactor": 1, "mobile": True})
        throttle(driver, args)
        if identity:
            driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Accept-Encoding": "identity"}})
        sent.clear()
        first_s = visit(driver, url)
        # The service worker installs after the page is ready: its fetches count too (they should hit the HTTP cache).
        started = time.monotonic()
        while not driver.execute_script("return document.body.dataset.offline && !!navigator.serviceWorker.controller"):
            if time.monotonic() - started > 300:
                raise RuntimeError("the service worker did not take the page")
            time.sleep(0.1)
        time.sleep(1)
        first_bytes, by_path = sum(sent.values()), dict(sent)
        encodings = driver.execute_script(
            "return performance.getEntriesByType('resource').filter((e) => e.name.includes('/assets/'))"
            ".map((e) => [e.name.split('/').pop(), e.encodedBodySize, e.decodedBodySize])")
        sent.clear()
        repeat_s = visit(driver, url)
        time.sleep(1)
        repeat_bytes = sum(sent.values())
        return {"first_visit_bytes": first_bytes, "first_visit_ready_s": round(first_s, 2),
                "repeat_visit_bytes": repeat_bytes, "repeat_visit_ready_s": round(repeat_s, 2),
                "largest": sorted(by_path.items(), key=lambda kv: -kv[1])[:4],
                "compressed_in_browser": [e for e in encodings if e[1] < e[2]]}
    finally:
        driver.quit()


def compression_table(assets) -> list[dict]:
    """Each served file: its bytes, and its Brotli (the app's copy; quality 9 timed for the large ones) and gzip
    copies."""
    import brotli

    rows = []
    for url, path in assets.files.items():
        if not url.startswith("/assets/"):
            continue
        data = path.read_bytes()
        br, gz = path.with_name(path.name + ".br"), path.with_name(path.name + ".gz")
        row = {"file": path.name, "bytes": len(data), "br": br.stat().st_size if br.exists() else None,
               "gz": gz.stat().st_size if gz.exists() else None}
        if len(data) > 1_000_000:  # the quality chosen per file (assets.BROTLI_QUALITY*): measured, not assumed
            for quality in (9, 11):
                started = time.perf_counter()
                row[f"br{quality}"] = len(brotli.compress(data, quality=quality))
                row[f"br{quality}_s"] = round(time.perf_counter() - started, 2)
            started = time.perf_counter()
            row["gz9"] = len(gzip.compress(data, 9, mtime=0))
            row["gz9_s"] = round(time.perf_counter() - started, 2)
        rows.append(row)
    return sorted(rows, key=lambda r: -r["bytes"])


def main() -> None:
    from mpoxscan.deploy.runtime import bundled_model
    from mpoxscan.web.app import create_app
    from mpoxscan.web.settings import Settings
    from mpoxscan.web.testing import ServerThread, self_signed_certificate

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--down-kbps", type=int, default=1600)
    parser.add_argument("--up-kbps", type=int, default=750)
    parser.add_argument("--rtt-ms", type=int, default=150)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    cert, key, spki = self_signed_certificate(Path(tempfile.mkdtemp(prefix="mpoxscan-tls-")), "127.0.0.1")
    app = create_app(Settings(model=bundled_model(), data_dir=Path(tempfile.mkdtemp(prefix="mpoxscan-wire-data-")),
                              secure_cookies=True))
    sent = counting(app)
    with ServerThread(app, tls_cert=str(cert), tls_key=str(key)) as server:
        url = server.url + "/"
        runs = [one_run(url, sent, spki, args) for _ in range(args.runs)]
        plain = one_run(url, sent, spki, args, identity=True)
    table = compression_table(app.state.assets)

    def median(name: str) -> float:
        return round(statistics.median(r[name] for r in runs), 2)

    out = {"link": {"down_kbps": args.down_kbps, "up_kbps": args.up_kbps, "rtt_ms": args.rtt_ms},
           "runs": runs, "uncompressed_run": plain,
           "first_visit_mb": round(median("first_visit_bytes") / 1e6, 2), "first_visit_ready_s": median("first_visit_ready_s"),
           "repeat_visit_ready_s": median("repeat_visit_ready_s"), "repeat_visit_kb": round(median("repeat_visit_bytes") / 1e3, 1),
           "uncompressed_first_visit_mb": round(plain["first_visit_bytes"] / 1e6, 2),
           "uncompressed_first_visit_ready_s": plain["first_visit_ready_s"],
           "compression": table, "measured": time.strftime("%Y-%m-%d %H:%M")}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "wire.json").write_text(json.dumps(out, indent=2) + "\n")
    link = f"{args.down_kbps / 1000:g} Mbps down, {args.up_kbps} kbps up, {args.rtt_ms} ms added round trip"
    md = ["# The phone page on slow mobile data", "",
          f"Measured by `benchmarks/wire_bench.py` on this machine, {out['measured']}: the app over https in this "
          f"process, headless Chromium at 412 x 915 with a fresh profile per run, throttled by the DevTools protocol "
          f"({link}); {args.runs} runs, medians. Bytes are what the server sent (response bodies, the service "
          f"worker's installation included).", "",
          "| figure | with compression (this version) | the browser asking for none (Accept-Encoding: identity) |",
          "|---|---|---|",
          f"| first visit, bytes | {out['first_visit_mb']} MB | {out['uncompressed_first_visit_mb']} MB |",
          f"| first visit, ready to screen | {out['first_visit_ready_s']} s | {out['uncompressed_first_visit_ready_s']} s |",
          f"| repeat visit, ready to screen | {out['repeat_visit_ready_s']} s ({out['repeat_visit_kb']} kB sent) | "
          f"{plain['repeat_visit_ready_s']} s |", "",
          "Each run: " + "; ".join(f"{r['first_visit_bytes'] / 1e6:.2f} MB, ready in {r['first_visit_ready_s']} s, "
                                    f"repeat {r['repeat_visit_ready_s']} s" for r in runs) + ".", "",
          "## Each file's bytes", "",
          "| file | as is | Brotli (served) | gzip (served) |", "|---|---|---|---|"]
    def n(value) -> str:
        return "-" if value is None else f"{value:,}"

    for row in table:
        md.append(f"| {row['file']} | {n(row['bytes'])} | {n(row['br'])} | {n(row['gz'])} |")
    md += ["", "Brotli's quality for the large files (assets.py: 11, except 9 for model weights), bytes and seconds "
               "to compress on this machine:", "", "| file | quality 9 | quality 11 | gzip 9 |", "|---|---|---|---|"]
    for row in table:
        if "br9" in row:
            md.append(f"| {row['file']} | {row['br9']:,} ({row['br9_s']} s) | {row['br11']:,} ({row['br11_s']} s) | "
                      f"{row['gz9']:,} ({row['gz9_s']} s) |")
    md.append("")
    (RESULTS / "wire.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
