"""How long `mpoxscan cases export` takes on 10,000 concluded, consented cases (issue 30's aim: under 2 minutes).

    .venv/bin/python benchmarks/export_bench.py [--cases 10000] [--side 128] [--keep DIR]

Fills a fresh SQLite database (the data folder's, as `serve` makes it, migrated to the newest schema) and the folder
photo store with CASES answered cases, each with the training consent, a label of the bundled model's classes and
one tiny photo (SIDE x SIDE JPEG, one of 200 generated skin-like pictures, each case its own file) with its skin
tone, as submission stores it for a case with the training consent. Rows are inserted directly (not through
/api/cases, which would screen each photo first: the export is what is measured).
Then it times the real command as a process (start-up and imports included):

1. the first export into a new folder (every photo copied and its skin tone measured);
2. a rerun with nothing new (the idempotent path: nothing is written but the record);
3. a rerun after 1 % of the cases withdrew their training consent and 1 % new cases arrived.

Results: benchmarks/results/expert_cases/export.json and export.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "expert_cases"
CLASSES = ("Monkeypox", "Chickenpox", "Measles", "Healthy", "HFMD", "Cowpox")


def _pictures(n: int, side: int, seed: int = 0) -> list[bytes]:
    """N small skin-coloured JPEGs with a few darker blobs (enough skin for a skin-tone measure)."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        base = np.array([rng.integers(150, 230), rng.integers(100, 170), rng.integers(80, 140)], np.float32)
        arr = np.clip(base + rng.normal(0, 8, (side, side, 3)), 0, 255).astype(np.uint8)
        img = Image.fromarray(arr)
        draw = ImageDraw.Draw(img)
        for _ in range(4):
            x, y = (int(v) for v in rng.integers(0, side, 2))
            r = int(rng.integers(3, max(4, side // 8)))
            draw.ellipse((x - r, y - r, x + r, y + r), fill=(120, 50, 50))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def fill(data: Path, n: int, side: int, start: int = 0, seed: int = 0) -> list[str]:
    """N answered, consented, labelled cases with one photo each in ``data``'s database and photo folder; returns
    their numbers."""
    import hashlib

    from sqlalchemy.orm import Session

    from mpoxscan.web.db import database_url, make_engine, migrate
    from mpoxscan.web.tables import Case, CasePhoto, utcnow

    photos = data / "photos"
    photos.mkdir(parents=True, exist_ok=True)
    engine = make_engine(database_url(None, data))
    migrate(engine)
    from mpoxscan.data.skin import working_ita

    pictures = _pictures(200, side, seed)
    tones = [working_ita(p) for p in pictures]  # what submission stores for a consented case
    rng = random.Random(seed + start)
    numbers = []
    with Session(engine) as db:
        for k in range(start, start + n):
            jpeg = pictures[k % len(pictures)]
            name = f"{uuid.uuid4().hex}.jpg"
            (photos / name).write_bytes(jpeg)  # set-up only: the export's own writes are the durable ones
            label = rng.choice(CLASSES)
            sha = hashlib.sha256(jpeg).hexdigest()
            probabilities = {c: 1 / len(CLASSES) for c in CLASSES}
            number = f"B{k:07d}"
            case = Case(number=number, token_hash=hashlib.sha256(number.encode()).hexdigest(), photo_file=name,
                        photo_sha256=sha, model_sha256="0" * 64, computed="device",
                        device_probabilities=probabilities, predicted=label, probabilities=probabilities,
                        screening_probability=0.5, screening_threshold=0.5, answer="positive", status="answered",
                        verdict="likely-mpox" if label == "Monkeypox" else "unlikely-mpox", answered_at=utcnow(),
                        training_consent=True, label=label, fever=rng.choice(("yes", "no", None)))
            case.photos = [CasePhoto(position=1, photo_file=name, photo_sha256=sha, computed="device",
                                     device_probabilities=probabilities, predicted=label, probabilities=probabilities,
                                     screening_probability=0.5, answer="positive", ita=tones[k % len(pictures)])]
            db.add(case)
            numbers.append(number)
            if len(numbers) % 1000 == 0:
                db.commit()
        db.commit()
    engine.dispose()
    return numbers


def withdraw(data: Path, numbers: list[str]) -> None:
    from sqlalchemy.orm import Session

    from mpoxscan.web.cases import case_by_number, withdraw_training_consent
    from mpoxscan.web.db import database_url, make_engine

    engine = make_engine(database_url(None, data))
    with Session(engine) as db:
        for number in numbers:
            withdraw_training_consent(db, case_by_number(db, number))
    engine.dispose()


def timed_export(data: Path, out: Path) -> dict:
    command = [sys.executable, "-m", "mpoxscan.cli", "cases", "export", "--out", str(out), "--data-dir", str(data)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"the export failed: {done.stderr.strip()}")
    return {"seconds": round(seconds, 2), "output": done.stdout.strip().splitlines()[-2]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--side", type=int, default=128, help="the photos' side in pixels")
    parser.add_argument("--keep", type=Path, help="a folder to keep the data and the export in (default: temporary)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="export-bench-") as scratch:
        root = args.keep or Path(scratch)
        data, out = root / "data", root / "export"
        start = time.perf_counter()
        numbers = fill(data, args.cases, args.side)
        fill_s = time.perf_counter() - start
        first = timed_export(data, out)
        files = [p for p in out.rglob("*.jpg")]
        exported_bytes = sum(p.stat().st_size for p in files)
        again = timed_export(data, out)
        one_percent = max(1, args.cases // 100)
        withdraw(data, random.Random(1).sample(numbers, one_percent))
        fill(data, one_percent, args.side, start=args.cases, seed=1)
        changed = timed_export(data, out)
        remaining = len(list(out.rglob("*.jpg")))
    result = {
        "what": f"`mpoxscan cases export` on {args.cases} answered, consented, labelled cases (one {args.side} x "
                f"{args.side} JPEG each), SQLite, folder photo store, the command run as a process",
        "cases": args.cases, "photo_side": args.side, "fill_seconds": round(fill_s, 1),
        "first_export": {**first, "photos": len(files), "bytes": exported_bytes},
        "rerun_nothing_new": again,
        "rerun_1pct_withdrawn_1pct_new": {**changed, "photos_after": remaining},
        "aim_seconds": 120, "within_aim": first["seconds"] < 120,
        "machine": {"node": platform.node(), "cpus": os.cpu_count(), "python": sys.version.split()[0],
                    "note": "shared with a CPU training job and other sessions"},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "export.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "export.md").write_text(markdown(result))
    print(json.dumps(result, indent=2))


def markdown(r: dict) -> str:
    rows = [("first export into a new folder", r["first_export"]),
            ("rerun, nothing new", r["rerun_nothing_new"]),
            ("rerun, 1 % withdrawn and 1 % new", r["rerun_1pct_withdrawn_1pct_new"])]
    lines = ["# `mpoxscan cases export`: speed", "", r["what"] + ".", "",
             "| run | seconds | what the command said |", "|---|---:|---|"]
    lines += [f"| {name} | {v['seconds']} | {v['output']} |" for name, v in rows]
    lines += ["", f"Aim: under {r['aim_seconds']} s for the first export: "
                  f"{'met' if r['within_aim'] else 'NOT met'} ({r['first_export']['seconds']} s). "
                  f"Machine: {r['machine']['cpus']} CPUs, {r['machine']['note']}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
