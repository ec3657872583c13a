"""Measure what hostile images cost the server (issue 14): time to refuse and extra memory of `mpoxscan serve`.

    .venv/bin/python benchmarks/hostile_bench.py [--repeat 5]

Starts `mpoxscan serve` as its own process, screens one ordinary photo (so that the model and the loader are warm
and the process's peak memory already holds a normal screening), then sends each hostile image to /api/screen and
records the answer, the client-side time (median of --repeat sends) and how far the server's peak resident memory
(VmHWM, Linux) rose above its peak after the ordinary photo. Issue 14's aim: the 50000 x 1 PNG and its kin refused in
< 50 ms with < 50 MB extra memory (it once took 55 s and 10.5 GB). Writes benchmarks/results/web/hostile.json and
hostile.md.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import struct
import tempfile
import time
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "web"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def strip_png(width: int, height: int) -> bytes:
    """A valid 1-bit PNG (the 50000 x 1 one is 225 bytes)."""
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(row * height, 9)) + _chunk(b"IEND", b""))


def bomb_png(side: int) -> bytes:
    """A side x side 1-bit PNG of zeros: a few kB that decode to side**2 pixels."""
    return strip_png(side, side)


def jpeg(size: tuple[int, int]) -> bytes:
    from mpoxscan.web.crashtest import make_jpeg

    return make_jpeg(0, size)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM (not Linux?)")


def main() -> None:
    import httpx

    from mpoxscan.web.crashtest import ServeProcess

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    cases = {"50000 x 1 PNG": strip_png(50000, 1), "1 x 50000 PNG": strip_png(1, 50000),
             "20000 x 1 PNG": strip_png(20000, 1), "5000 x 1 PNG": strip_png(5000, 1),
             "2000 x 20 PNG (100:1)": strip_png(2000, 20), "15 x 15 PNG": strip_png(15, 15),
             "30000 x 30000 PNG bomb": bomb_png(30000)}
    ordinary = jpeg((1600, 1200))
    with tempfile.TemporaryDirectory() as tmp:
        server = ServeProcess(Path(tmp) / "data").start()
        try:
            client = httpx.Client(base_url=server.url, timeout=120)
            send = lambda data, name: client.post("/api/screen", files={"photo": (name, data)})  # noqa: E731
            times = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                r = send(ordinary, "photo.jpg")
                times.append(1000 * (time.perf_counter() - started))
            assert r.status_code == 200, r.text
            baseline = peak_rss_mb(server.process.pid)
            rows = [{"image": "ordinary 1600 x 1200 JPEG (for comparison)", "bytes": len(ordinary), "status": 200,
                     "reason": None, "ms_median": round(statistics.median(times), 1), "extra_peak_mb": 0.0}]
            for name, data in cases.items():
                times, answer = [], None
                for _ in range(args.repeat):
                    started = time.perf_counter()
                    answer = send(data, "image.png")
                    times.append(1000 * (time.perf_counter() - started))
                rows.append({"image": name, "bytes": len(data), "status": answer.status_code,
                             "reason": answer.json().get("detail"), "ms_median": round(statistics.median(times), 1),
                             "extra_peak_mb": round(peak_rss_mb(server.process.pid) - baseline, 1)})
                print(json.dumps(rows[-1]), flush=True)
        finally:
            server.stop()
    hostile = rows[1:]
    out = {"repeat": args.repeat, "server_peak_mb_after_ordinary_photo": round(baseline, 1), "rows": rows,
           "all_refused_4xx": all(400 <= r["status"] < 500 for r in hostile),
           "max_ms": max(r["ms_median"] for r in hostile), "max_extra_peak_mb": max(r["extra_peak_mb"] for r in hostile),
           "aim": {"ms": 50, "extra_mb": 50}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "hostile.json").write_text(json.dumps(out, indent=2) + "\n")
    md = ["# Hostile images against `mpoxscan serve`", "",
          f"`benchmarks/hostile_bench.py`: `mpoxscan serve` in its own process on this machine; each image sent "
          f"{args.repeat} times to `/api/screen` (multipart); time on the client (median); extra memory = the server's "
          f"peak resident memory (VmHWM) above its peak after an ordinary 1600 x 1200 photo ({baseline:.0f} MB).", "",
          "| image | bytes | answer | reason | ms (median) | extra peak memory (MB) |", "|---|---:|---|---|---:|---:|"]
    md += [f"| {r['image']} | {r['bytes']} | {r['status']} | {r['reason'] or ''} | {r['ms_median']} | "
           f"{r['extra_peak_mb']} |" for r in rows]
    md += ["", f"Every hostile image refused with a 4xx: {out['all_refused_4xx']}; slowest {out['max_ms']} ms, at most "
               f"{out['max_extra_peak_mb']} MB above the ordinary peak (aim: < 50 ms, < 50 MB).", ""]
    (RESULTS / "hostile.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
