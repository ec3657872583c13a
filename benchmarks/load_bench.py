"""Load on several server processes sharing PostgreSQL, the database photo store and Redis (issue 15, item 2).

    .venv/bin/python benchmarks/load_bench.py [--workers 4] [--submissions 500] [--screenings 2000] [--concurrency 16]

For 1 worker and then N workers, each on a fresh PostgreSQL database and an emptied Redis, it starts
`mpoxscan serve --workers K --photo-store db --limits-storage redis://...` as a separate process and sends, from a
bounded pool of client threads on this machine, the consented submissions (each a different generated photo, POST
/api/cases) and then the server screenings (POST /api/screen). It then checks from the database that no case was lost
or stored twice (the numbers answered are exactly the rows) and that each case holds its own photo (the stored bytes
hash to the case's checksum and to the photo sent), and that the sign-in limit holds across workers: 11 failed
sign-ins from one address, each on a new connection (so any worker may answer), the 11th refused.

PostgreSQL and Redis: throwaway servers from .ci/postgres and .ci/redis unless --postgres / --redis name running ones.
Results: benchmarks/results/web/load.json, load.md and load.png (``--label`` says what run it was, e.g. a smoke run).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results" / "web"
PASSWORD = "load bench password"


def photo_jpeg(seed: int, size=(480, 360)) -> bytes:
    """A distinct phone-like photo per seed: a smooth colour field, grain and blobs (never two alike)."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(seed)
    w, h = size
    base = Image.fromarray(rng.integers(90, 230, size=(6, 8, 3), dtype=np.uint8), "RGB").resize((w, h),
                                                                                               Image.Resampling.BICUBIC)
    img = Image.fromarray(np.clip(np.asarray(base, np.float32) + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(9):
        x, y, r = int(rng.integers(0, w)), int(rng.integers(0, h)), int(rng.integers(8, 28))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(c) for c in rng.integers(40, 200, 3)))
    buf = io.BytesIO()
    img.filter(ImageFilter.SMOOTH).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


class Services:
    """Throwaway PostgreSQL and Redis (the CI scripts), or the ones named on the command line."""

    def __init__(self, postgres: str | None, redis: str | None, folder: Path) -> None:
        self.folder, self.started = folder, []
        env = {**os.environ, "MPOXSCAN_PG_PORT": str(50000 + os.getpid() % 5000),
               "MPOXSCAN_REDIS_PORT": str(55000 + os.getpid() % 5000)}
        if postgres is None:
            postgres = subprocess.run(["bash", str(REPO / ".ci" / "postgres"), "start", str(folder / "pg")], env=env,
                                      check=True, capture_output=True, text=True).stdout.strip()
            self.started.append(("postgres", folder / "pg"))
        if redis is None:
            redis = subprocess.run(["bash", str(REPO / ".ci" / "redis"), "start", str(folder / "redis")], env=env,
                                   check=True, capture_output=True, text=True).stdout.strip()
            self.started.append(("redis", folder / "redis"))
        self.postgres, self.redis = postgres, redis

    def fresh_database(self) -> str:
        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url

        name = f"mpoxscan_load_{uuid.uuid4().hex[:10]}"
        admin = create_engine(self.postgres, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        return make_url(self.postgres).set(database=name).render_as_string(hide_password=False)

    def flush_redis(self) -> None:
        import redis

        redis.Redis.from_url(self.redis).flushdb()

    def stop(self) -> None:
        for kind, folder in self.started:
            subprocess.run(["bash", str(REPO / ".ci" / kind), "stop", str(folder)], capture_output=True)


def start_server(workers: int, db: str, redis_url: str, data_dir: Path, port: int) -> subprocess.Popen:
    import httpx

    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    log = open(data_dir.parent / f"serve-{workers}.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "mpoxscan.cli", "serve", "--workers", str(workers), "--port", str(port), "--db", db,
         "--photo-store", "db", "--limits-storage", redis_url, "--upload-limit", "1000000/hour",
         "--screen-limit", "1000000/hour", "--login-limit", "10/15minutes", "--data-dir", str(data_dir)],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"serve exited: see {log.name}")
        try:
            # Every worker must be up: a few health checks on new connections, all answered.
            if all(httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200 for _ in range(4)):
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.terminate()
    raise RuntimeError("serve did not become healthy within 180 s")


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` and its live descendants (Linux /proc)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in tree:
                tree.add(child)
                frontier.append(child)
    return sum(times.get(p, 0.0) for p in tree)


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (every process, this one and other users' included)."""
    values = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def timed_loop(n: int, concurrency: int, call) -> tuple[list[float], list, float]:
    """Run ``call(k)`` for k in range(n) from ``concurrency`` client threads; latencies (s), results, wall time."""
    latencies: list[float] = [0.0] * n
    results: list = [None] * n

    def one(k: int) -> None:
        t0 = time.perf_counter()
        results[k] = call(k)
        latencies[k] = time.perf_counter() - t0

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(n)))
    return latencies, results, time.perf_counter() - t0


def run_config(workers: int, args, services: Services, folder: Path) -> dict:
    import httpx
    from sqlalchemy import create_engine, select

    from mpoxscan.web.tables import Case, StoredPhoto
    from mpoxscan.web.testing import free_port

    db = services.fresh_database()
    services.flush_redis()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    data_dir = folder / f"data-{workers}"
    data_dir.mkdir(parents=True)
    server = start_server(workers, db, services.redis, data_dir, port)
    local = threading.local()

    def client() -> httpx.Client:  # one keep-alive connection per client thread, like a phone's
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=base, timeout=120)
        return local.client

    try:
        info = httpx.get(base + "/api/model").json()
        probabilities = json.dumps({c: 1 / len(info["classes"]) for c in info["classes"]})
        photos = [photo_jpeg(seed) for seed in range(args.submissions)]

        def submit(k: int):
            fields = {"consent": "true", "computed": "device", "probabilities": probabilities,
                      "model_sha256": info["sha256"]}
            r = client().post("/api/cases", data=fields,
                              files={"photo": ("photo.jpg", photos[k], "image/jpeg")})
            return r.status_code, (r.json().get("number") if r.status_code == 201 else r.text[:200])

        cpu = {}

        def measured(what: str, n: int, call):
            # Where the time goes: the server's processes' CPU against the whole machine's over the same wall time.
            server0, machine0, own0 = tree_cpu_seconds(server.pid), machine_busy_seconds(), time.process_time()
            out = timed_loop(n, args.concurrency, call)
            wall = out[2]
            cpu[what] = {"server_cores": round((tree_cpu_seconds(server.pid) - server0) / wall, 2),
                         "clients_cores": round((time.process_time() - own0) / wall, 2),
                         "machine_busy_cores": round((machine_busy_seconds() - machine0) / wall, 2)}
            return out

        sub_lat, sub_res, sub_wall = measured("submissions", args.submissions, submit)
        screen_photos = [photo_jpeg(100_000 + seed) for seed in range(min(args.screenings, 50))]

        def screen(k: int):
            r = client().post("/api/screen", files={"photo": ("photo.jpg", screen_photos[k % len(screen_photos)],
                                                              "image/jpeg")})
            return r.status_code, None

        scr_lat, scr_res, scr_wall = measured("screenings", args.screenings, screen)

        # What the database holds: every number answered is one row, and its photo is the one sent.
        numbers = [number for status, number in sub_res if status == 201]
        engine = create_engine(db)
        sent_sha = {hashlib.sha256(p).hexdigest() for p in photos}
        with engine.connect() as conn:
            rows = conn.execute(select(Case.number, Case.photo_file, Case.photo_sha256)).all()
            stored = dict(conn.execute(select(StoredPhoto.name, StoredPhoto.data)).all())
        engine.dispose()
        own_photo = sum(1 for _n, name, sha in rows
                        if name in stored and hashlib.sha256(stored[name]).hexdigest() == sha)
        # The server strips metadata and re-encodes: the stored photo is not the bytes sent, so "its own photo" is
        # checked as distinct checksums, one per case, each matching its stored bytes.
        check = {
            "submissions_answered_201": len(numbers),
            "submission_errors": sorted({f"{s}: {t}" for s, t in sub_res if s != 201})[:5],
            "cases_in_database": len(rows),
            "lost": len(set(numbers) - {r[0] for r in rows}),
            "unexpected_or_duplicated": len(rows) - len(set(numbers) & {r[0] for r in rows}),
            "cases_with_their_own_photo": own_photo,
            "distinct_photos": len({r[2] for r in rows}),
            "photos_sent_distinct": len(sent_sha),
            "screenings_200": sum(1 for s, _ in scr_res if s == 200),
        }

        # The sign-in limit across workers: an expert, then 11 wrong passwords, each on a new connection.
        env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
        subprocess.run([sys.executable, "-m", "mpoxscan.cli", "expert", "add", "doc@example.org", "--password-stdin",
                        "--db", db, "--data-dir", str(data_dir)], input=PASSWORD + "\n", env=env, check=True,
                       capture_output=True, text=True)
        codes = [httpx.post(base + "/expert/login", data={"email": "doc@example.org", "password": "wrong password"},
                            timeout=60).status_code for _ in range(11)]
        check["sign_in_codes"] = codes
        check["sign_in_limit_holds"] = codes == [401] * 10 + [429]
    finally:
        server.terminate()
        server.wait(timeout=60)

    def summary(lat: list[float], wall: float, n: int) -> dict:
        ms = [x * 1000 for x in lat]
        return {"n": n, "wall_s": round(wall, 2), "per_s": round(n / wall, 2), "p50_ms": round(percentile(ms, 50), 1),
                "p95_ms": round(percentile(ms, 95), 1), "mean_ms": round(statistics.fmean(ms), 1) if ms else None}

    return {"workers": workers, "submissions": {**summary(sub_lat, sub_wall, args.submissions), **cpu["submissions"]},
            "screenings": {**summary(scr_lat, scr_wall, args.screenings), **cpu["screenings"]}, "checks": check,
            "latencies_ms": {"submissions": [round(x * 1000, 1) for x in sub_lat],
                             "screenings": [round(x * 1000, 1) for x in scr_lat]}}


def write_results(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    slim = {**results, "runs": [{k: v for k, v in run.items() if k != "latencies_ms"} for run in results["runs"]]}
    (out / "load.json").write_text(json.dumps(slim, indent=2) + "\n")
    one, many = results["runs"]
    lines = [f"# Load: {many['workers']} workers against 1 on PostgreSQL + database photo store + Redis", "",
             f"**{results['label']}**", "",
             f"Command: `{results['command']}`  ", f"Machine: {results['machine']}; run at {results['date']}", "",
             "| workers | what | requests | wall s | per s | p50 ms | p95 ms | cores: server | clients | whole machine |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for run in results["runs"]:
        for what in ("submissions", "screenings"):
            s = run[what]
            lines.append(f"| {run['workers']} | {what} | {s['n']} | {s['wall_s']} | {s['per_s']} | {s['p50_ms']} | "
                         f"{s['p95_ms']} | {s['server_cores']} | {s['clients_cores']} | {s['machine_busy_cores']} |")
    lines += ["", f"Ratio, {many['workers']} workers / 1: submissions per second "
              f"**{results['ratio']['submissions']:.2f}x**, screenings per second "
              f"**{results['ratio']['screenings']:.2f}x**.", "",
              "Cores: CPU seconds per wall second of the server's processes (all workers), of this script's client "
              "threads, and of the whole machine (other users' jobs included); the machine has "
              f"{os.cpu_count()} cores.", "", "| check | 1 worker | N workers |", "|---|---|---|"]
    for key in one["checks"]:
        lines.append(f"| {key} | {one['checks'][key]} | {many['checks'][key]} |")
    (out / "load.md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for ax, what in zip(axes, ("submissions", "screenings")):
            data = [run["latencies_ms"][what] for run in results["runs"]]
            ax.boxplot(data, tick_labels=[f"{run['workers']} worker(s)\n{run[what]['per_s']}/s"
                                          for run in results["runs"]])
            ax.set_title(f"{what}: latency (ms)")
            ax.set_yscale("log")
        import textwrap

        fig.suptitle(textwrap.fill(results["label"], 110), fontsize=9)
        fig.tight_layout()
        fig.savefig(out / "load.png", dpi=100)
    except ImportError:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=4, help="the N of 1 vs N workers")
    parser.add_argument("--submissions", type=int, default=500)
    parser.add_argument("--screenings", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16, help="client threads sending at once")
    parser.add_argument("--postgres", help="a running PostgreSQL's admin URL (default: a throwaway one)")
    parser.add_argument("--redis", help="a running Redis's URL (default: a throwaway one)")
    parser.add_argument("--label", default="full run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mpoxscan-load-") as tmp:
        services = Services(args.postgres, args.redis, Path(tmp))
        try:
            runs = [run_config(k, args, services, Path(tmp) / f"run-{k}") for k in (1, args.workers)]
        finally:
            services.stop()
    results = {
        "label": args.label, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": " ".join(["benchmarks/load_bench.py", *sys.argv[1:]]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load average at end "
                   f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}",
        "runs": runs,
        "ratio": {what: runs[1][what]["per_s"] / runs[0][what]["per_s"] for what in ("submissions", "screenings")},
    }
    write_results(results, args.out)
    print((args.out / "load.md").read_text())


if __name__ == "__main__":
    main()
