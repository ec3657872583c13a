"""50 concurrent case submissions against one server process: all stored, none lost or duplicated, and how long
each submission took.

    .venv/bin/python benchmarks/cases_bench.py [--data ../shared/data] [--cases 50] [--rounds 3]
                                               [--postgres postgresql://...] [--phone-size 2048]

Starts `mpoxscan serve` as its own process (one uvicorn worker, the bundled model, a fresh data folder, the upload
limit raised for the run), prepares N distinct real MSLD v2.0 photos the way the phone page sends them (re-encoded
JPEG in a multipart form, with the on-device probabilities computed here by the same model), and posts all N at once from N
concurrent connections, ROUNDS times. Then it reads the database and the photo folder back: N x ROUNDS cases, N x
ROUNDS distinct case numbers and photo files, and every case number holding the photo its sender sent. SQLite always;
PostgreSQL too with --postgres (an empty database: the script drops its tables afterwards). MSLD's photos are small
(most 224 x 224); a phone sends up to 2048 px, so each run is repeated with the same photos enlarged to 2048 x 2048
(bicubic; --phone-size 0 skips it): the sizes, not the pixels, of a real phone's uploads.
Results: benchmarks/results/web/cases.json, cases.md and cases.png.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "web"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare(data: Path, n: int, side: int = 0) -> list[dict]:
    """N distinct photos as the page sends them (enlarged to side x side if given), each with its on-device answer."""
    from PIL import Image

    from mpoxscan.deploy.runtime import Screener, bundled_model
    from mpoxscan.images import load_image

    screener = Screener(bundled_model())
    paths = sorted((data / "msld-v2").glob("*/*.jpg"))[:: max(1, 755 // n)][:n]
    bodies = []
    for path in paths:
        photo = load_image(path)
        if side:
            photo = photo.resize((side, side), Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        Image.frombytes("RGB", photo.size, photo.tobytes()).save(buf, "JPEG", quality=90)
        answer = screener.screen(photo)
        bodies.append({"consent": "true", "photo": buf.getvalue(), "computed": "device",
                       "probabilities": json.dumps(answer.probabilities), "source": path.name})
    return bodies


async def submit_all(base: str, bodies: list[dict], sha: str) -> tuple[list[dict], float]:
    import httpx

    limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=len(bodies))
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120) as client:
        async def one(body: dict) -> dict:
            fields = {k: v for k, v in body.items() if k not in ("source", "photo")} | {"model_sha256": sha}
            t0 = time.perf_counter()
            r = await client.post("/api/cases", data=fields, files={"photo": ("photo", body["photo"], "image/jpeg")})
            return {"status": r.status_code, "seconds": time.perf_counter() - t0, "source": body["source"],
                    "number": r.json().get("number") if r.status_code == 201 else None,
                    "detail": None if r.status_code == 201 else r.text[:200]}

        t0 = time.perf_counter()
        results = await asyncio.gather(*(one(b) for b in bodies))
        return list(results), time.perf_counter() - t0


def run_backend(label: str, db: str | None, bodies: list[dict], rounds: int) -> dict:
    import httpx
    from PIL import Image
    from sqlalchemy import func, select

    from mpoxscan.web.cases import case_by_number
    from mpoxscan.web.db import database_url, make_engine, session_factory
    from mpoxscan.web.tables import Case

    data_dir = Path(tempfile.mkdtemp(prefix=f"mpoxscan-cases-{label}-"))
    if db:
        from sqlalchemy import inspect

        engine = make_engine(database_url(db, data_dir))
        if inspect(engine).get_table_names():
            raise SystemExit(f"{label}: the database is not empty: give an empty one (the script counts every row)")
        engine.dispose()
    port = _free_port()
    command = [sys.executable, "-m", "mpoxscan.cli", "serve", "--port", str(port), "--data-dir", str(data_dir),
               "--upload-limit", "100000/hour"] + (["--db", db] if db else [])
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                sha = httpx.get(base + "/api/model", timeout=1).json()["sha256"]
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise SystemExit(f"the server did not start: {server.stderr.read() if server.poll() is not None else ''}")
        all_results, walls = [], []
        for k in range(rounds):
            results, wall = asyncio.run(submit_all(base, bodies, sha))
            all_results += results
            walls.append(wall)
            ok = sum(r["status"] == 201 for r in results)
            print(f"{label} round {k + 1}: {ok}/{len(results)} stored in {wall:.2f} s, "
                  f"p95 {np.percentile([r['seconds'] for r in results], 95):.2f} s", flush=True)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
    # Read everything back from the database and the photo folder.
    engine = make_engine(database_url(db, data_dir))
    sources = {b["source"]: b for b in bodies}
    mismatched = 0
    with session_factory(engine)() as session:
        stored = session.scalar(select(func.count()).select_from(Case))
        numbers = [r["number"] for r in all_results if r["number"]]
        for r in all_results:
            if not r["number"]:
                continue
            case = case_by_number(session, r["number"])
            got = np.asarray(Image.open(data_dir / "photos" / case.photo_file), np.float32)
            sent = np.asarray(Image.open(io.BytesIO(sources[r["source"]]["photo"])), np.float32)
            mismatched += got.shape != sent.shape or float(np.abs(got - sent).mean()) > 3
    if db:  # leave the PostgreSQL database as we found it
        from mpoxscan.web.tables import Base

        Base.metadata.drop_all(engine)
        with engine.begin() as conn:
            from sqlalchemy import text

            conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    engine.dispose()
    files = len(list((data_dir / "photos").glob("*.jpg")))
    seconds = np.array([r["seconds"] for r in all_results])
    return {"backend": label, "cases_per_round": len(bodies), "rounds": rounds, "sent": len(all_results),
            "accepted": sum(r["status"] == 201 for r in all_results),
            "errors": [r for r in all_results if r["status"] != 201][:5],
            "stored_rows": stored, "photo_files": files, "distinct_numbers": len(set(numbers)),
            "numbers_holding_another_photo": mismatched,
            "median_s": round(float(np.median(seconds)), 3), "p95_s": round(float(np.percentile(seconds, 95)), 3),
            "max_s": round(float(seconds.max()), 3), "round_wall_s": [round(w, 2) for w in walls],
            "throughput_per_s": round(len(all_results) / sum(walls), 1),
            "latencies_s": [round(float(s), 4) for s in seconds]}


def plot(runs: list[dict], path: Path) -> None:
    """Cumulative share of submissions answered within a time, one line per photo size and database."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    for r in runs:
        s = np.sort(r["latencies_s"])
        ax.plot(s, np.arange(1, len(s) + 1) / len(s), label=f"{r['backend']}, {r['photos']} (p95 {r['p95_s']:.2f} s)")
    ax.set_xscale("log")
    ax.set_xticks([0.1, 0.2, 0.5, 1, 2, 5])
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("response time of one submission (s)")
    ax.set_ylabel("share of submissions")
    r = runs[0]
    ax.set_title(f"{r['cases_per_round']} concurrent submissions x {r['rounds']} rounds, one server process", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data")
    parser.add_argument("--cases", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--phone-size", type=int, default=2048)
    parser.add_argument("--postgres", default=os.environ.get("MPOXSCAN_TEST_POSTGRES"),
                        help="an empty PostgreSQL database to run against as well")
    args = parser.parse_args()
    runs = []
    for side in [0] + ([args.phone_size] if args.phone_size else []):
        bodies = prepare(args.data, args.cases, side)
        megabytes = np.mean([len(b["photo"]) for b in bodies]) / 1e6
        photos = f"{side} x {side} px (enlarged)" if side else "as in MSLD (most 224 x 224 px)"
        for backend, db in [("sqlite", None)] + ([("postgresql", args.postgres)] if args.postgres else []):
            run = run_backend(backend, db, bodies, args.rounds)
            runs.append({**run, "photos": photos, "mean_request_mb": round(float(megabytes), 3)})
    RESULTS.mkdir(parents=True, exist_ok=True)
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}
    (RESULTS / "cases.json").write_text(json.dumps({"machine": machine, "runs": runs}, indent=1) + "\n")
    lines = [f"# {args.cases} concurrent case submissions, one server process ({args.rounds} rounds)", "",
             f"`.venv/bin/python benchmarks/cases_bench.py{' --postgres URL' if args.postgres else ''}` on "
             f"{machine['cpus']} CPUs. Each round posts {args.cases} distinct real photos (MSLD v2.0, re-encoded "
             "as the page does) at once from as many connections; afterwards the database and the photo folder "
             "are read back. Then the same photos enlarged to the size a phone sends (enlarged photos are smoother "
             "than real ones of that size, so their files are smaller).", "",
             "| photos (mean request) | database | sent | accepted | rows stored | photo files | distinct numbers | "
             "numbers holding another photo | median | p95 | max | round wall time | cases/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r['photos']} ({r['mean_request_mb']:.2f} MB) | {r['backend']} | {r['sent']} | {r['accepted']} | {r['stored_rows']} | {r['photo_files']} | "
                     f"{r['distinct_numbers']} | {r['numbers_holding_another_photo']} | {r['median_s']:.2f} s | "
                     f"{r['p95_s']:.2f} s | {r['max_s']:.2f} s | "
                     f"{', '.join(f'{w:.1f}' for w in r['round_wall_s'])} s | {r['throughput_per_s']} |")
    lines += ["", "The response time is the whole request as the phone sees it: upload, parsing the multipart form, "
              "opening the photo, stripping its metadata, screening it again on the server, writing the file "
              "(fsync) and the database row. One uvicorn process serves them all; the screening runs in its thread "
              "pool, so the time grows with the number of requests waiting behind the 2 cores.", ""]
    (RESULTS / "cases.md").write_text("\n".join(lines))
    plot(runs, RESULTS / "cases.png")
    print((RESULTS / "cases.md").read_text())


if __name__ == "__main__":
    main()
