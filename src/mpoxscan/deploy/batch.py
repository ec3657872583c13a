"""Screening archives: `mpoxscan predict ... --out results.csv [--ray [ADDRESS]]`.

Results stream to a CSV or JSON-lines file as photos are answered, so a killed job loses at most the photos in
flight, and a rerun with the same ``--out`` skips every photo the file already answers. One bad photo is an error
row, never a stopped job. Locally the photos are screened in batches in this process; with Ray (an optional extra,
``pip install 'mpoxscan[ray]'``) Ray Data spreads them over actors, each holding one ONNX Runtime session, on this
machine or on a cluster (``ray://head:10001``; the photo paths must then be readable from every node).
"""

from __future__ import annotations

import csv
import json
import os
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from mpoxscan.deploy.runtime import Screener
from mpoxscan.errors import MpoxscanError
from mpoxscan.images import load_image

#: The columns of a CSV result file before the per-class probabilities (p_<class>).
CSV_FIELDS = ["image", "answer", "reason", "predicted", "positive_class", "positive_probability", "threshold", "error"]


def screen_paths(screener: Screener, paths: list[str]) -> list[dict]:
    """One result row per path, in order: the answer, or ``error`` with a one-line reason."""
    rows: list[dict] = [{"image": p} for p in paths]
    images, where = [], []
    for k, path in enumerate(paths):
        try:
            images.append(load_image(path, min_side=screener.input_size))
            where.append(k)
        except MpoxscanError as exc:  # load_image turns unreadable and missing files into one-line errors too
            rows[k]["error"] = str(exc)
    for k, answer in zip(where, screener.screen_batch(images)):
        rows[k].update(answer.as_dict())
    return rows


def _repair_tail(path: Path) -> None:
    """Cut a last line that a killed job left half-written (everything before it is whole)."""
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


class ResultFile:
    """An append-only CSV (``.csv``) or JSON-lines (``.jsonl``, ``.json``) file of result rows, which knows the photos
    it already answers."""

    def __init__(self, path: Path, classes: list[str]) -> None:
        self.path = Path(path)
        self.kind = "csv" if self.path.suffix.lower() == ".csv" else "jsonl"
        if self.path.suffix.lower() not in (".csv", ".jsonl", ".json"):
            raise MpoxscanError(f"{path}: results go to a .csv or a .jsonl file")
        self.fields = CSV_FIELDS + [f"p_{c}" for c in classes]
        self.done: set[str] = set()
        if self.path.exists() and self.path.stat().st_size:
            _repair_tail(self.path)
            self.done = set(self._answered())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        self._file = open(self.path, "a", newline="", encoding="utf-8")
        self._csv = csv.DictWriter(self._file, self.fields, extrasaction="ignore") if self.kind == "csv" else None
        if self._csv and fresh:
            self._csv.writeheader()

    def _answered(self) -> Iterator[str]:
        with open(self.path, newline="", encoding="utf-8") as f:
            if self.kind == "csv":
                reader = csv.DictReader(f)
                if reader.fieldnames != self.fields:
                    raise MpoxscanError(f"{self.path}: not a result file of this model (other columns): choose "
                                        "another --out")
                yield from (r["image"] for r in reader)
            else:
                for n, line in enumerate(f, 1):
                    try:
                        yield json.loads(line)["image"]
                    except (ValueError, KeyError, TypeError):
                        raise MpoxscanError(f"{self.path}, line {n}: not a result row: choose another --out") from None

    def write(self, rows: Iterable[dict]) -> None:
        for row in rows:
            if self._csv:
                flat = {"image": row["image"], "error": row.get("error")}
                if "answer" in row:
                    flat |= {"answer": row["answer"], "reason": row["reason"], "predicted": row["predicted"],
                             "positive_class": row["screening"]["class"],
                             "positive_probability": row["screening"]["probability"],
                             "threshold": row["screening"]["threshold"]}
                    flat |= {f"p_{c}": v for c, v in row["probabilities"].items()}
                self._csv.writerow(flat)
            else:
                self._file.write(json.dumps(row) + "\n")
            self.done.add(row["image"])
        self._file.flush()  # a killed process then loses nothing that was written

    def close(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()


@dataclass
class ArchiveSummary:
    answered: int  # photos answered by this run (error rows included)
    skipped: int  # photos the result file already answered
    errors: int  # error rows written by this run
    seconds: float

    @property
    def rate(self) -> float:
        return self.answered / self.seconds if self.seconds else 0.0


def screen_archive(paths: list[Path], model: Path, out: Path, *, ray_address: str | None = None,
                   workers: int | None = None, threads: int | None = None, batch_size: int = 32,
                   progress: bool = True) -> ArchiveSummary:
    """Screen ``paths`` into the result file ``out``, skipping the photos it already answers.

    ``ray_address``: None screens in this process; "local" starts Ray on this machine; anything else is a Ray
    cluster's address. ``workers``: Ray actors (default: one per core Ray sees), each with ``threads`` ONNX Runtime
    threads (default 1 under Ray; all cores locally)."""
    from tqdm import tqdm

    screener = Screener(model, threads=threads if ray_address is None else 1)
    results = ResultFile(out, screener.classes)
    todo = [str(p) for p in paths if str(p) not in results.done]
    skipped = len(paths) - len(todo)
    started, errors = time.perf_counter(), 0
    bar = tqdm(total=len(todo), unit="photo", desc="screening", disable=not progress, smoothing=0.05)
    try:
        chunks = (_local_chunks(screener, todo, batch_size) if ray_address is None else
                  _ray_chunks(Path(model), todo, ray_address, workers, threads or 1, batch_size))
        for rows in chunks:
            results.write(rows)
            errors += sum("error" in r for r in rows)
            bar.update(len(rows))
    finally:
        bar.close()
        results.close()
    return ArchiveSummary(len(todo), skipped, errors, time.perf_counter() - started)


def _local_chunks(screener: Screener, todo: list[str], batch_size: int) -> Iterator[list[dict]]:
    for start in range(0, len(todo), batch_size):
        yield screen_paths(screener, todo[start:start + batch_size])


class _RayScreener:
    """A Ray Data actor: one ONNX Runtime session, loaded once from the model's bytes (so that cluster nodes need
    no copy of the file)."""

    def __init__(self, model: list, threads: int) -> None:
        import ray

        # The bytes sit once in Ray's object store; the reference comes wrapped in a list so that Ray passes the
        # reference (small constructor arguments, which a restarted actor can be given again) and not the bytes.
        self.screener = Screener(ray.get(model[0]), threads=threads)

    def __call__(self, batch: dict) -> dict:
        rows = screen_paths(self.screener, [str(p) for p in batch["image"]])
        return {"row": [json.dumps(r) for r in rows]}  # one string column: Arrow needs no schema for the answers


def _quiet_ray_data() -> None:
    """Ray Data's console notes (plans, "finished in", ...) would bury our one progress bar: errors only on the
    console, everything still in its log file. Ray Data re-reads its logging configuration at every execution, from
    the file that RAY_DATA_LOGGING_CONFIG names (YAML, of which JSON is a subset), so we give it one."""
    import copy
    import tempfile

    from ray.data._internal import logging as ray_data_logging

    if "RAY_DATA_LOGGING_CONFIG" in os.environ:  # the user's own configuration wins
        return
    config = copy.deepcopy(ray_data_logging.DEFAULT_CONFIG)
    for name, handler in config.get("handlers", {}).items():
        if "file" not in name:
            handler["level"] = "ERROR"
    path = Path(tempfile.gettempdir()) / f"mpoxscan-ray-data-logging-{os.getuid()}.json"
    path.write_text(json.dumps(config))
    os.environ["RAY_DATA_LOGGING_CONFIG"] = str(path)
    ray_data_logging.configure_logging()


def _ray_chunks(model: Path, todo: list[str], address: str, workers: int | None, threads: int,
                batch_size: int) -> Iterator[list[dict]]:
    from mpoxscan.ray_support import start_ray

    if not todo:
        return
    warnings.filterwarnings("ignore", module=r"ray(\.|$)")
    # A C++ note that actors' constructor arguments live in the object store (they do: the model's bytes, so that
    # cluster nodes need no copy of the file), printed as an error on every run.
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    ray = start_ray(address)
    _quiet_ray_data()
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # ours counts photos; Ray's would count blocks per operator
    cpus = int(ray.cluster_resources().get("CPU", 1))
    workers = workers or max(1, cpus // threads)
    blocks = max(workers, len(todo) // batch_size)
    dataset = ray.data.from_items([{"image": p} for p in todo], override_num_blocks=blocks)
    answered = dataset.map_batches(_RayScreener, fn_constructor_kwargs={"model": [ray.put(model.read_bytes())],
                                                                        "threads": threads},
                                   batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=workers),
                                   num_cpus=threads)
    for batch in answered.iter_batches(batch_size=None, batch_format="numpy"):
        yield [json.loads(r) for r in batch["row"]]
