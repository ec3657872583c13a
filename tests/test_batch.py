"""Archive screening (`predict --out`, locally and on Ray): streamed, resumable, one bad photo never stops the job."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import make_photo
from mpoxscan.deploy.batch import ResultFile, screen_archive
from mpoxscan.deploy.runtime import Screener, bundled_model
from mpoxscan.errors import MpoxscanError


def _archive(folder: Path, n: int, bad: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(n):
        paths.append(folder / f"p{k:04d}.jpg")
        make_photo(k, (150 + k % 40, 120)).save(paths[-1], quality=90)
    for k in range(bad):
        paths.append(folder / f"bad{k}.jpg")
        paths[-1].write_bytes(b"not a photo at all" * k)  # the first is empty
    return paths


def _cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mpoxscan.cli", *args], capture_output=True, text=True, **kwargs)


def _rows(path: Path) -> list[dict]:
    if path.suffix == ".csv":
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_archive_answers_every_photo_once_with_the_same_answers_as_predict(tmp_path):
    paths = _archive(tmp_path / "a", 12, bad=2)
    (tmp_path / "list.txt").write_text("# two listed again, one missing\na/p0001.jpg\na/p0002.jpg\na/missing.jpg\n")
    proc = _cli("predict", str(tmp_path / "a"), f"@{tmp_path / 'list.txt'}", "--out", str(tmp_path / "r.csv"),
                "--batch-size", "5")
    assert proc.returncode == 1, proc.stderr  # the unreadable photos: exit status 1, as predict
    said = re.search(r"(\d+) photos answered and (\d+) could not be read", proc.stdout)
    assert "Traceback" not in proc.stderr and said, proc.stdout
    assert int(said[2]) >= 2 and int(said[1]) + int(said[2]) == 15  # the two bad photos are not counted as answered
    rows = _rows(tmp_path / "r.csv")
    assert sorted(r["image"] for r in rows) == sorted({str(p) for p in paths} | {str(tmp_path / "a/missing.jpg")})
    errors = {Path(r["image"]).name: r["error"] for r in rows if r["error"]}
    assert set(errors) == {"bad0.jpg", "bad1.jpg", "missing.jpg"} and "no such file" in errors["missing.jpg"]
    screener = Screener(bundled_model())
    from mpoxscan.images import load_image

    for r in rows:
        if r["error"]:
            continue
        one = screener.screen(load_image(r["image"], min_side=screener.input_size))
        assert r["answer"] == one.answer and float(r["positive_probability"]) == pytest.approx(one.positive_probability, abs=1e-5)
        assert float(r[f"p_{one.predicted}"]) == pytest.approx(one.probabilities[one.predicted], abs=1e-5)


def test_a_rerun_skips_what_is_answered_and_repairs_a_half_written_line(tmp_path):
    paths = _archive(tmp_path / "a", 9)
    out = tmp_path / "r.jsonl"
    first = screen_archive(paths[:5], bundled_model(), out, batch_size=2, progress=False)
    assert (first.answered, first.skipped) == (5, 0)
    with open(out, "a") as f:  # a job killed while writing its sixth row
        f.write('{"image": "' + str(paths[5]) + '", "answ')
    again = screen_archive(paths, bundled_model(), out, batch_size=4, progress=False)
    assert (again.answered, again.skipped, again.errors) == (4, 5, 0)
    rows = _rows(out)
    assert [r["image"] for r in rows] == [str(p) for p in paths] and all(r["answer"] for r in rows)


def test_a_result_file_of_another_kind_is_refused(tmp_path):
    other = tmp_path / "other.csv"
    other.write_text("image,verdict\nx.jpg,yes\n")
    with pytest.raises(MpoxscanError, match="not a result file"):
        ResultFile(other, ["A", "B"])
    with pytest.raises(MpoxscanError, match=".csv or a .jsonl"):
        ResultFile(tmp_path / "r.xlsx", ["A", "B"])
    proc = _cli("predict", str(tmp_path), "--ray")
    assert proc.returncode == 1 and "give --out" in proc.stderr and "Traceback" not in proc.stderr


def _ray_installed() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        if os.environ.get("MPOXSCAN_REQUIRE_RAY"):
            pytest.fail("Ray is required here (make ray)")
        return False
    return True


def test_ray_gives_the_local_answers_and_resumes_after_a_kill(tmp_path):
    if not _ray_installed():
        pytest.skip("needs the ray extra: make ray")
    paths = _archive(tmp_path / "a", 160, bad=1)
    local = tmp_path / "local.jsonl"
    screen_archive(paths, bundled_model(), local, batch_size=16, progress=False)
    expected = {r["image"]: r for r in _rows(local)}

    out = tmp_path / "ray.jsonl"
    job = subprocess.Popen([sys.executable, "-m", "mpoxscan.cli", "predict", str(tmp_path / "a"), "--out", str(out),
                            "--ray", "--workers", "2", "--batch-size", "8"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 24):
        time.sleep(0.2)
    os.killpg(job.pid, signal.SIGKILL)  # the driver and every Ray process it started
    job.wait()
    before = [line for line in out.read_text().splitlines()]
    assert 24 <= len(before) < len(paths), len(before)
    bad_answered = any("bad0.jpg" in line for line in before)

    proc = _cli("predict", str(tmp_path / "a"), "--out", str(out), "--ray", "--workers", "2", "--batch-size", "8",
                timeout=300)
    assert proc.returncode == (0 if bad_answered else 1), proc.stderr  # 1: this run met the bad photo
    # Every whole line of the killed run is kept (a half-written last one is cut and its photo screened again).
    assert any(f"{n} already in the file from an earlier run" in proc.stdout for n in (len(before), len(before) - 1)), proc.stdout
    rows = _rows(out)
    assert sorted(r["image"] for r in rows) == sorted(expected)  # each photo once: none redone, none lost
    for r in rows:
        e = expected[r["image"]]
        assert r.get("error") == e.get("error") and r.get("answer") == e.get("answer")
        if "answer" in r:
            assert r["screening"]["probability"] == pytest.approx(e["screening"]["probability"], abs=1e-5)
