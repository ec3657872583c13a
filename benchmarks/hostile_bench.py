"""The hostile suite's figures (issues 14 and 27): what hostile requests cost `mpoxscan serve`, run as its own process.

    .venv/bin/python benchmarks/hostile_bench.py [--repeat 5] [--quick]
    MPOXSCAN_TEST_POSTGRES=postgresql+psycopg://... MPOXSCAN_TEST_REDIS=redis://... \
        .venv/bin/python benchmarks/hostile_bench.py       # adds PostgreSQL and two workers

1. Hostile images, each sent --repeat times to /api/screen after an ordinary photo (so that the model and the loader
   are warm and the server's peak resident memory, VmHWM, already holds a normal screening): the answer, the client's
   time (median) and how far the peak rose. Issue 14's strips and bombs; issue 27's progressive scan bomb, deep images
   (32-bit float TIFF, 16-bit grey PNG, RGBA PNG, CMYK JPEG) and many frames, one at a time and four at once. Aims:
   refused or decoded in < 50 ms, < 100 MB above the ordinary peak (four at once: < 300 MB). For comparison, the
   largest deep images the loader accepts, decoded.
2. A burst of 20 concurrent unlocks with wrong PINs (one right one among them): how many were checked (a 401 or a
   303; the others are 429 unchecked), on SQLite, PostgreSQL and two workers. Aim: at most 5.
   And 30 concurrent wrong sign-ins against the limit of 10.
3. 40 clients unlocking one case with its right PIN, each sending its next request as soon as the last is answered,
   while another person sends cases one after another: that person's p95 beside its idle p95 (aim: at most 2x), and
   every answer's status (aim: no 5xx).
4. 1,100 half-open connections (slowloris) against a server whose open-file limit is 1,024 (soft and hard): /healthz
   time (aim < 1 s) and what the server wrote to stderr (aim: no traceback flood).

--quick: fewer submission rounds (a few minutes). Writes benchmarks/results/web/hostile.json and
hostile.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results" / "web"
PIN = "4711"


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


class Server:
    """`mpoxscan serve` as its own process (stderr to a file, so that a flood of log lines cannot block it)."""

    def __init__(self, folder: Path, extra: list[str] = (), open_files: int | None = None) -> None:
        from mpoxscan.web.testing import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        folder.mkdir(parents=True, exist_ok=True)
        self.stderr = folder / f"stderr-{self.port}.log"
        limit = (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))) if open_files else None
        with open(self.stderr, "w") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mpoxscan.cli", "serve", "--port", str(self.port), "--data-dir",
                 str(folder / "data"), "--upload-limit", "1000000/hour", *extra],
                env={**os.environ, "PYTHONPATH": str(REPO / "src")}, stdout=subprocess.DEVNULL, stderr=err,
                preexec_fn=limit)
        import httpx

        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"serve exited: {self.stderr.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("serve did not answer /healthz")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


STATUSES: list[int] = []  # every answer of the suite: the 5xx count
_HTTP = []


def post(url: str, **kwargs):
    """One request through a client shared by every thread (a new httpx client per request builds an SSL context:
    10 to 20 ms of this machine's CPU each, taken from the server under test)."""
    import httpx

    if not _HTTP:
        _HTTP.append(httpx.Client(timeout=300, verify=False, limits=httpx.Limits(max_connections=100,
                                                                               max_keepalive_connections=100)))
    r = _HTTP[0].post(url, **kwargs)
    STATUSES.append(r.status_code)
    return r


def case_form(url: str, photo: bytes, pin: str | None = None) -> dict:
    import httpx

    info = httpx.get(url + "/api/model", timeout=60).json()
    data = {"consent": "true", "computed": "device", "model_sha256": info["sha256"],
            "probabilities": json.dumps({c: 1 / len(info["classes"]) for c in info["classes"]})}
    if pin:
        data["pin"] = pin
    return {"data": data, "files": {"photo": ("photo", photo, "image/jpeg")}}


# 1. Hostile images.

def images(folder: Path, repeat: int) -> dict:
    from mpoxscan.web import hostile

    attacks = {"50000 x 1 PNG": strip_png(50000, 1), "1 x 50000 PNG": strip_png(1, 50000),
               "20000 x 1 PNG": strip_png(20000, 1), "5000 x 1 PNG": strip_png(5000, 1),
               "2000 x 20 PNG (100:1)": strip_png(2000, 20), "15 x 15 PNG": strip_png(15, 15),
               "30000 x 30000 PNG bomb": bomb_png(30000),
               **hostile.hostile_images()}  # the sizes: refused from their headers, quick to send
    edge = {"16-bit grey PNG 5000 x 5000 (25 MP: the budget)": hostile.gray16_png(5000),
            "32-bit float TIFF 3535 x 3535 (12.5 MP: the budget)": hostile.float_tiff(3535),
            "RGBA PNG 3535 x 3535 (12.5 MP: the budget)": hostile.rgba_png(3535)}
    server = Server(folder / "images")
    try:
        send = lambda data: post(server.url + "/api/screen", files={"photo": ("image", data)})  # noqa: E731
        ordinary = jpeg((1600, 1200))
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            r = send(ordinary)
            times.append(1000 * (time.perf_counter() - started))
        assert r.status_code == 200, r.text
        baseline = peak_rss_mb(server.process.pid)
        rows = [{"image": "ordinary 1600 x 1200 JPEG (for comparison)", "bytes": len(ordinary), "status": 200,
                 "reason": None, "ms_median": round(statistics.median(times), 1), "extra_peak_mb": 0.0}]

        def measure(name: str, data: bytes) -> dict:
            times, answer = [], None
            for _ in range(repeat):
                started = time.perf_counter()
                answer = send(data)
                times.append(1000 * (time.perf_counter() - started))
            row = {"image": name, "bytes": len(data), "status": answer.status_code,
                   "reason": answer.json().get("detail"), "ms_median": round(statistics.median(times), 1),
                   "extra_peak_mb": round(peak_rss_mb(server.process.pid) - baseline, 1)}
            print(json.dumps(row), flush=True)
            return row

        rows += [measure(name, data) for name, data in attacks.items()]
        deep = [data for name, data in attacks.items() if any(k in name for k in ("TIFF 7", "grey", "RGBA", "CMYK"))]
        started = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            together = list(pool.map(send, deep))
        four = {"images": "the four deep images at once", "statuses": [r.status_code for r in together],
                "ms": round(1000 * (time.perf_counter() - started), 1),
                "extra_peak_mb": round(peak_rss_mb(server.process.pid) - baseline, 1)}
        accepted = [measure(name, data) for name, data in edge.items()]
        with ThreadPoolExecutor(4) as pool:
            started = time.perf_counter()
            edge_four = list(pool.map(send, [edge[k] for k in edge] + [next(iter(edge.values()))]))
        four_edge = {"images": "four deep images at the budget at once", "statuses": [r.status_code for r in edge_four],
                     "ms": round(1000 * (time.perf_counter() - started), 1),
                     "extra_peak_mb": round(peak_rss_mb(server.process.pid) - baseline, 1)}
    finally:
        server.stop()
    hostile_rows = rows[1:]
    return {"server_peak_mb_after_ordinary_photo": round(baseline, 1), "rows": rows, "four_at_once": four,
            "accepted_at_the_budget": accepted, "four_at_the_budget": four_edge,
            "all_refused_4xx": all(400 <= r["status"] < 500 for r in hostile_rows),
            "max_ms": max(r["ms_median"] for r in hostile_rows),
            "max_extra_peak_mb": max(r["extra_peak_mb"] for r in hostile_rows),
            "aim": {"ms": 50, "extra_mb": 100, "four_at_once_mb": 300}}


# 2. Bursts against the PIN and the sign-in.

def pin_burst(folder: Path, label: str, extra: list[str], burst: int) -> dict:
    import httpx

    server = Server(folder / label.replace(" ", "-"), extra)
    try:
        sent = post(server.url + "/api/cases", **case_form(server.url, jpeg((640, 480)), PIN)).json()
        token = sent["follow_up"].rsplit("/", 1)[1]
        guesses = [f"{1000 + k}" for k in range(burst - 1)] + [PIN]
        with ThreadPoolExecutor(burst) as pool:
            codes = list(pool.map(lambda pin: post(server.url + f"/c/{token}/unlock", data={"pin": pin},
                                                   follow_redirects=False).status_code, guesses))
        with ThreadPoolExecutor(30) as pool:
            logins = list(pool.map(lambda k: post(server.url + "/expert/login", data={
                "email": "nobody@example.org", "password": f"wrong password {k}"}).status_code, range(30)))
        httpx.get(server.url + "/healthz", timeout=30)
    finally:
        server.stop()
    return {"server": label, "unlocks": burst, "checked": codes.count(401) + codes.count(303),
            "right_pin_found": 303 in codes, "statuses": {str(c): codes.count(c) for c in sorted(set(codes))},
            "sign_ins": 30, "sign_ins_checked": logins.count(401),
            "sign_in_statuses": {str(c): logins.count(c) for c in sorted(set(logins))}}


# 3. Forty unlocks of one case, and another person's submissions.

def p95(values: list[float]) -> float:
    return round(statistics.quantiles(values, n=20)[-1], 1) if len(values) >= 2 else round(values[0], 1)


def unlock_flood(folder: Path, clients: int, rounds: int) -> dict:
    """Bursts (the issue's case): each round, 40 unlocks with the right PIN and another person's case sent at the same
    moment. Sustained: 40 clients each sending its next unlock as soon as the last is answered, against 40 clients
    doing the same with the case's locked page (a cheap GET), while the other person sends cases one after another."""
    import httpx

    from mpoxscan.web.crashtest import make_jpeg

    server = Server(folder / "flood")
    try:
        sent = post(server.url + "/api/cases", **case_form(server.url, make_jpeg(0, (640, 480)), PIN)).json()
        token = sent["follow_up"].rsplit("/", 1)[1]
        forms = [case_form(server.url, make_jpeg(k, (640, 480))) for k in range(1, rounds + 1)]
        codes: list[int] = []

        def submit(form: dict) -> float:
            started = time.perf_counter()
            r = post(server.url + "/api/cases", **form)
            assert r.status_code == 201, r.text
            return 1000 * (time.perf_counter() - started)

        def unlock() -> None:
            codes.append(post(server.url + f"/c/{token}/unlock", data={"pin": PIN}, follow_redirects=False).status_code)

        def page() -> None:
            codes.append(_HTTP[0].get(server.url + f"/c/{token}").status_code)

        def bursts_of(request) -> tuple[list[float], list[int]]:
            times = []
            with ThreadPoolExecutor(clients + 1) as pool:
                for form in forms:
                    others = [pool.submit(request) for _ in range(clients)]
                    times.append(pool.submit(submit, form).result())
                    for other in others:
                        other.result()
            answers, codes[:] = list(codes), []
            return times, answers

        idle = [submit(form) for form in forms]
        bursts, burst_codes = bursts_of(unlock)
        page_bursts, page_codes = bursts_of(page)
        STATUSES.extend(page_codes)

        def sustained(request) -> tuple[list[float], int]:
            stop, answers = threading.Event(), []

            def client():
                with httpx.Client(timeout=300) as http:
                    while not stop.is_set():
                        answers.append(request(http))

            threads = [threading.Thread(target=client) for _ in range(clients)]
            for thread in threads:
                thread.start()
            time.sleep(1)
            try:
                return [submit(form) for form in forms], answers
            finally:
                stop.set()
                for thread in threads:
                    thread.join()

        looped, unlock_answers = sustained(lambda http: http.post(
            server.url + f"/c/{token}/unlock", data={"pin": PIN}, follow_redirects=False).status_code)
        paged, page_answers = sustained(lambda http: http.get(server.url + f"/c/{token}").status_code)
        STATUSES.extend(unlock_answers + page_answers)
    finally:
        server.stop()
    statuses = lambda codes: {str(c): codes.count(c) for c in sorted(set(codes))}  # noqa: E731
    return {"clients": clients, "submissions": rounds, "idle_p95_ms": p95(idle),
            "burst_p95_ms": p95(bursts), "burst_ratio": round(p95(bursts) / p95(idle), 2),
            "burst_unlock_statuses": statuses(burst_codes), "page_burst_p95_ms": p95(page_bursts),
            "page_burst_ratio": round(p95(page_bursts) / p95(idle), 2), "page_burst_statuses": statuses(page_codes),
            "looped_unlock_p95_ms": p95(looped), "looped_unlock_ratio": round(p95(looped) / p95(idle), 2),
            "looped_unlock_answers": statuses(unlock_answers),
            "looped_page_p95_ms": p95(paged), "looped_page_ratio": round(p95(paged) / p95(idle), 2),
            "looped_page_answers": statuses(page_answers), "aim_ratio": 2.0}


# 3b. What an argon2 check's priority does to a screening beside it (in this process).

def argon2_priority(rounds: int = 15) -> dict:
    """A screening's time (median of ``rounds``) alone, and beside a loop of argon2 checks at the same priority and at
    security.ARGON2_NICE (the checks' own thread, as the server runs them)."""
    from mpoxscan.deploy.runtime import Screener, bundled_model
    from mpoxscan.images import load_image
    from mpoxscan.web import security
    from mpoxscan.web.crashtest import make_jpeg

    screener, photo = Screener(bundled_model()), load_image(make_jpeg(1, (640, 480)))
    password_hash = security._hasher.hash("4711")

    def screenings() -> float:
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            screener.screen_and_map(photo)
            times.append(1000 * (time.perf_counter() - started))
        return round(statistics.median(times), 1)

    out = {"alone_ms": screenings()}
    for nice in (0, security.ARGON2_NICE):
        stop = threading.Event()

        def loop():
            if nice:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
            while not stop.is_set():
                security._hasher.verify(password_hash, "4711")

        thread = threading.Thread(target=loop)
        thread.start()
        time.sleep(0.5)
        out[f"beside_argon2_nice_{nice}_ms"] = screenings()
        stop.set()
        thread.join()
    return out


# 4. Slowloris.

def slowloris(folder: Path, connections: int) -> dict:
    import httpx

    from mpoxscan.web import hostile

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < connections + 256:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, connections + 256), hard))
    server = Server(folder / "slowloris", open_files=1024)
    held = []
    try:
        started = time.perf_counter()
        held = hostile.half_open_connections("127.0.0.1", server.port, connections)
        opened_s = time.perf_counter() - started
        times, statuses = [], []
        for _ in range(5):
            started = time.perf_counter()
            try:
                statuses.append(httpx.get(server.url + "/healthz", timeout=30).status_code)
            except httpx.HTTPError as exc:
                statuses.append(type(exc).__name__)
            times.append(1000 * (time.perf_counter() - started))
            time.sleep(0.5)
        time.sleep(12)  # past the header timeout (10 s): the server has closed what it still held
        still_open = 0
        for conn in held:
            conn.setblocking(False)
            try:
                still_open += conn.recv(1) != b""
            except BlockingIOError:
                still_open += 1
            except OSError:
                pass
    finally:
        for conn in held:
            conn.close()
        server.stop()
    log = server.stderr.read_text()
    return {"half_open": connections, "opened": len(held), "open_files_limit": 1024, "seconds_to_open": round(opened_s, 2),
            "healthz_statuses": statuses, "healthz_ms": [round(t, 1) for t in times],
            "held_after_header_timeout": still_open, "stderr_bytes": len(log.encode()),
            "tracebacks": log.count("Traceback"), "aim_ms": 1000}


def fresh_database(admin_url: str) -> tuple[str, Callable[[], None]]:
    """A new, empty database on the PostgreSQL server of ``admin_url`` (as the tests' fixture makes), and the function
    that drops it."""
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"mpoxscan_bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return make_url(admin_url).set(database=name).render_as_string(hide_password=False), drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="fewer submission rounds")
    args = parser.parse_args()
    postgres, redis = os.environ.get("MPOXSCAN_TEST_POSTGRES"), os.environ.get("MPOXSCAN_TEST_REDIS")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        out = {"repeat": args.repeat, "quick": args.quick, "machine": f"{os.cpu_count()} cores",
               "load_average_at_start": round(os.getloadavg()[0], 1)}
        out["images"] = images(folder, args.repeat)
        servers = [("SQLite, one worker", [])]
        if postgres:
            servers.append(("PostgreSQL, one worker", ["--db", postgres]))
            if redis:
                servers.append(("PostgreSQL, two workers", ["--db", postgres, "--workers", "2",
                                                            "--limits-storage", redis]))
        if redis:
            servers.append(("SQLite, two workers", ["--workers", "2", "--limits-storage", redis]))
        out["pin_bursts"] = []
        for label, extra in servers:
            if redis:
                import redis as redis_client

                redis_client.Redis.from_url(redis).flushdb()
            drop = None
            if "--db" in extra:  # each server its own new database
                url, drop = fresh_database(postgres)
                extra = [url if arg == postgres else arg for arg in extra]
            try:
                out["pin_bursts"].append(pin_burst(folder, label, extra, 20))
            finally:
                if drop:
                    drop()
            print(json.dumps(out["pin_bursts"][-1]), flush=True)
        out["unlock_flood"] = unlock_flood(folder, 40, 10 if args.quick else 30)
        print(json.dumps(out["unlock_flood"]), flush=True)
        out["argon2_priority"] = argon2_priority()
        print(json.dumps(out["argon2_priority"]), flush=True)
        out["slowloris"] = slowloris(folder, 1100)
        print(json.dumps(out["slowloris"]), flush=True)
    out["answers"] = len(STATUSES)
    out["answers_5xx"] = sum(s >= 500 for s in STATUSES)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "hostile.json").write_text(json.dumps(out, indent=2) + "\n")
    (RESULTS / "hostile.md").write_text(report(out))
    print(report(out))


def report(out: dict) -> str:
    im = out["images"]
    md = ["# The hostile suite against `mpoxscan serve`", "",
          f"`benchmarks/hostile_bench.py{' --quick' if out['quick'] else ''}` on this machine ({out['machine']}, "
          f"shared: load average {out['load_average_at_start']} at the start): `mpoxscan serve` as its own process; {out['answers']} answers in all, "
          f"**{out['answers_5xx']} of them 5xx** (aim: none).", "",
          "## Hostile images", "",
          f"Each sent {out['repeat']} times to `/api/screen` (multipart); time on the client (median); extra memory = the "
          f"server's peak resident memory (VmHWM) above its peak after an ordinary 1600 x 1200 photo "
          f"({im['server_peak_mb_after_ordinary_photo']:.0f} MB).", "",
          "| image | bytes | answer | reason | ms (median) | extra peak memory (MB) |", "|---|---:|---|---|---:|---:|"]
    md += [f"| {r['image']} | {r['bytes']} | {r['status']} | {r['reason'] or ''} | {r['ms_median']} | "
           f"{r['extra_peak_mb']} |" for r in im["rows"]]
    four = im["four_at_once"]
    md += ["", f"Every hostile image refused with a 4xx: {im['all_refused_4xx']}; slowest {im['max_ms']} ms, at most "
               f"{im['max_extra_peak_mb']} MB above the ordinary peak (aim: < 50 ms, < 100 MB). The four deep images "
               f"at once: {four['statuses']} in {four['ms']} ms, {four['extra_peak_mb']} MB above the ordinary peak "
               f"(aim: < 300 MB).", "",
           "For comparison, the largest deep images the loader accepts (not attacks: decoded, at a reduced size for "
           "screening):", "", "| image | bytes | answer | ms (median) | extra peak memory (MB) |", "|---|---:|---|---:|---:|"]
    md += [f"| {r['image']} | {r['bytes']} | {r['status']} | {r['ms_median']} | {r['extra_peak_mb']} |"
           for r in im["accepted_at_the_budget"]]
    edge = im["four_at_the_budget"]
    md += ["", f"Four of them at once: {edge['statuses']} in {edge['ms']} ms, {edge['extra_peak_mb']} MB above the "
               "ordinary peak.", "", "## Bursts against the PIN and the sign-in", "",
           "20 concurrent unlocks of one case (19 wrong PINs and the right one, each on its own connection): checked = "
           "answered 401 (wrong) or 303 (right); the rest 429, unchecked. 30 concurrent wrong sign-ins against the "
           "limit of 10.", "", "| server | PINs checked (aim <= 5) | right PIN found | answers | sign-ins checked "
           "(aim <= 10) | answers |", "|---|---:|---|---|---:|---|"]
    md += [f"| {b['server']} | {b['checked']} | {b['right_pin_found']} | {b['statuses']} | {b['sign_ins_checked']} | "
           f"{b['sign_in_statuses']} |" for b in out["pin_bursts"]]
    fl = out["unlock_flood"]
    sl = out["slowloris"]
    md += ["", "## Forty unlocks of one case, and another person's submissions", "",
           f"Idle, another person's {fl['submissions']} cases sent one after another: p95 {fl['idle_p95_ms']} ms.", "",
           f"- Bursts (the issue's case): each of {fl['submissions']} rounds, {fl['clients']} unlocks with the right PIN "
           f"and that person's case at the same moment ({fl['burst_unlock_statuses']}): p95 {fl['burst_p95_ms']} ms, "
           f"**{fl['burst_ratio']}x** idle (aim: at most 2x); the same bursts of 40 loads of the case's locked page "
           f"instead ({fl['page_burst_statuses']}): p95 {fl['page_burst_p95_ms']} ms, {fl['page_burst_ratio']}x.",
           f"- Sustained: {fl['clients']} clients each unlocking again as soon as answered "
           f"({fl['looped_unlock_answers']}): p95 {fl['looped_unlock_p95_ms']} ms, {fl['looped_unlock_ratio']}x; "
           f"the same {fl['clients']} clients reloading the case's locked page instead ({fl['looped_page_answers']}): "
           f"p95 {fl['looped_page_p95_ms']} ms, {fl['looped_page_ratio']}x (for comparison: a flood of a cheap "
           f"page).", "",
           "## An argon2 check's priority", "",
           f"A screening (median of 15, this process) alone: {out['argon2_priority']['alone_ms']} ms; beside a loop of "
           f"argon2 checks at the same priority: {out['argon2_priority']['beside_argon2_nice_0_ms']} ms; at nice 10, as "
           f"the server runs them: {out['argon2_priority']['beside_argon2_nice_10_ms']} ms.", "",
           "## Slowloris", "",
           f"{sl['opened']} half-open connections (the start of a request's headers, never finished) against "
           f"`mpoxscan serve` with an open-file limit of {sl['open_files_limit']} (soft and hard), opened in "
           f"{sl['seconds_to_open']} s: `/healthz` answered {sl['healthz_statuses']} in {sl['healthz_ms']} ms (aim: "
           f"< 1000 ms); after the header timeout the server held {sl['held_after_header_timeout']} of them; it wrote "
           f"{sl['stderr_bytes']} bytes to stderr ({sl['tracebacks']} tracebacks).", ""]
    return "\n".join(md)


if __name__ == "__main__":
    main()
