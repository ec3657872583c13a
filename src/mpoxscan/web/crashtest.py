"""The crash test of the photo store, shared by tests/test_faults.py and benchmarks/crash_bench.py: `mpoxscan serve`
as a real process on SQLite, concurrent case submissions through the phone page's API, ``kill -9`` mid-way, a
restart (whose start-up sweep cleans up), and a check that every submission answered 2xx is stored with its own photo
and that no file in the photo folder lacks a case.
"""

from __future__ import annotations

import asyncio
import json
import hashlib
import io
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from mpoxscan.web.testing import free_port


def make_jpeg(seed: int, size: tuple[int, int] = (640, 480)) -> bytes:
    """A distinct photo-sized JPEG per seed (smooth colours plus grain: about 100 kB)."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(60, 230, (6, 8, 3), dtype=np.uint8)).resize(size, Image.Resampling.BICUBIC)
    arr = np.clip(np.asarray(coarse, np.float32) + rng.normal(0, 10, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def stored_sha256(jpeg: bytes) -> str:
    """The sha256 of the file the server stores for ``jpeg``: the same metadata stripping and re-encoding
    (mpoxscan.web.cases.submit_case), done here, so each stored file can be matched to what its sender sent."""
    from mpoxscan.images import load_image, strip_metadata
    from mpoxscan.web.cases import STORED_MAX_SIDE

    return hashlib.sha256(strip_metadata(load_image(jpeg), max_side=STORED_MAX_SIDE)).hexdigest()


class ServeProcess:
    """`mpoxscan serve` in its own process on a data folder (SQLite), the upload limit raised for the test."""

    def __init__(self, data_dir: Path, extra: list[str] | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [sys.executable, "-m", "mpoxscan.cli", "serve", "--port", str(self.port), "--data-dir",
                        str(self.data_dir), "--upload-limit", "1000000/hour", *(extra or [])]
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> ServeProcess:
        import httpx

        self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mpoxscan serve exited: {self.process.stderr.read()[-2000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"mpoxscan serve did not answer /healthz within {timeout} s")

    def kill(self) -> None:
        """``kill -9``: no shutdown handler, no flush, no cleanup."""
        if self.process and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class Submission:
    seed: int
    sha256: str  # of the file the server should store
    status: int | None = None  # None: no answer (the server was killed first)
    number: str | None = None


@dataclass
class Round:
    submissions: list[Submission]
    killed_after: int  # 2xx answers received when the server was killed
    seconds: float
    files_before_sweep: dict[str, int] = field(default_factory=dict)

    @property
    def accepted(self) -> list[Submission]:
        return [s for s in self.submissions if s.status is not None and 200 <= s.status < 300]


def crash_round(server: ServeProcess, seeds: list[int], kill_after: int) -> Round:
    """Send one submission per seed at once; ``kill -9`` the server as soon as ``kill_after`` have answered 2xx."""
    import httpx

    info = httpx.get(server.url + "/api/model", timeout=30).json()
    probabilities = json.dumps({c: 1 / len(info["classes"]) for c in info["classes"]})
    photos = {seed: make_jpeg(seed) for seed in seeds}
    submissions = [Submission(seed, stored_sha256(photos[seed])) for seed in seeds]

    async def run() -> int:
        done = asyncio.Event()
        accepted = 0
        limits = httpx.Limits(max_connections=len(seeds), max_keepalive_connections=len(seeds))
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=120) as client:
            async def one(sub: Submission) -> None:
                nonlocal accepted
                # The phone page's request (static/app.js): a multipart form, the re-encoded photo as its file.
                fields = {"consent": "true", "computed": "device", "probabilities": probabilities,
                          "model_sha256": info["sha256"]}
                try:
                    r = await client.post("/api/cases", data=fields,
                                          files={"photo": ("photo", photos[sub.seed], "image/jpeg")})
                except httpx.HTTPError:
                    return  # cut off by the kill: the sender got no number
                sub.status = r.status_code
                if r.status_code == 201:
                    sub.number = r.json()["number"]
                    accepted += 1
                    if accepted >= kill_after:
                        done.set()

            everyone = asyncio.gather(*(one(s) for s in submissions))
            waiter = asyncio.ensure_future(done.wait())
            await asyncio.wait([waiter, everyone], return_when=asyncio.FIRST_COMPLETED)
            killed_at = accepted
            server.kill()  # mid-way: the others are being uploaded, screened, written or committed
            await everyone
            waiter.cancel()
            return killed_at

    t0 = time.perf_counter()
    killed_after = asyncio.run(run())
    return Round(submissions, killed_after, time.perf_counter() - t0)


def photo_folder_census(data_dir: Path) -> dict[str, int]:
    """What lies in the photo folder: photos and .part files (the heat maps kept beside photos are not counted, so
    that files minus cases stays the number of files no case owns)."""
    files = [p.name for p in (Path(data_dir) / "photos").iterdir()
             if p.is_file() and not p.name.endswith(".heatmap.png")]
    return {"files": len(files), "part": sum(n.endswith(".part") for n in files)}


def check_store(data_dir: Path, accepted: list[Submission]) -> dict:
    """After a restart: each 2xx submission's case with its own photo (the file's sha256 is what the server stores
    for that sender's photo, and the row's); files no case owns; .part files; cases whose photo is missing."""
    from sqlalchemy import select

    from mpoxscan.web.db import database_url, make_engine, session_factory
    from mpoxscan.web.store import owner_stem
    from mpoxscan.web.tables import Case

    photos = Path(data_dir) / "photos"
    engine = make_engine(database_url(None, Path(data_dir)))
    try:
        with session_factory(engine)() as db:
            cases = {c.number: (c.photo_file, c.photo_sha256) for c in db.scalars(select(Case))}
    finally:
        engine.dispose()
    lost, wrong_photo = [], []
    for sub in accepted:
        if sub.number not in cases:
            lost.append(sub.number)
            continue
        name, sha = cases[sub.number]
        path = photos / name
        actual = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
        if actual != sub.sha256 or sha != sub.sha256:
            wrong_photo.append(sub.number)
    owners = {Path(name).stem for name, _sha in cases.values()}
    files = [p.name for p in photos.iterdir() if p.is_file()]
    return {"cases": len(cases), "lost": lost, "wrong_photo": wrong_photo,
            "orphans": [n for n in files if not n.startswith(".") and owner_stem(n) not in owners],
            "part": [n for n in files if n.endswith(".part")],
            "missing_photo": [number for number, (name, _sha) in cases.items() if not (photos / name).is_file()]}
