"""The manifest: one CSV row per input file, with the curation decision. The one reader and writer of it."""

from __future__ import annotations

import csv
import hashlib
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from mpoxscan.errors import MpoxscanError

STATUSES = ("kept", "duplicate", "rejected", "conflict")


@dataclass
class ManifestRow:
    path: str  # absolute path of the original file
    source: str
    relpath: str  # relative to the source's root
    label: str  # resolved label for kept images; the source's own (mapped) label otherwise
    source_label: str  # the class folder it came from
    group: str  # leakage group: patient id, joined across duplicates (same group -> same fold)
    sha256: str
    width: int
    height: int
    status: str  # kept / duplicate / rejected / conflict
    reason: str = ""
    duplicate_of: str = ""  # path of the kept representative, for duplicates
    match: str = ""  # how it was matched: identical / texture=0.98 / keypoints=23 (pHash distance d)
    fold: str = ""  # 1..k for kept images; empty otherwise
    splits: str = ""  # imported folds (--folds-from): the split in each, e.g. "train,valid,test,train,train"
    export_path: str = ""  # normalised square copy, relative to the manifest's folder
    ita: str = ""  # skin tone: Individual Typology Angle in degrees (mpoxscan.data.skin); empty when too little skin
    site: str = ""  # where the photo comes from (sources of one place share it): the leave-one-site-out protocol


COLUMNS = tuple(f.name for f in fields(ManifestRow))
#: Columns added after the first manifests were written: older files without them still read (as empty).
OPTIONAL_COLUMNS = ("ita", "site")


def write_manifest(path: Path, rows: list[ManifestRow]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow(asdict(row))


def manifest_path(path: Path | str) -> Path:
    """A manifest file, or the folder ``mpoxscan curate`` wrote it to."""
    path = Path(path)
    return path / "manifest.csv" if path.is_dir() else path


def read_manifest(path: Path | str) -> list[ManifestRow]:
    """Rows of a manifest written by ``mpoxscan curate``; a clear error if the file is not one."""
    path = manifest_path(path)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = set(COLUMNS) - set(OPTIONAL_COLUMNS) - set(reader.fieldnames or ())
            if missing:
                raise MpoxscanError(f"{path}: not an mpoxscan manifest (missing columns: {', '.join(sorted(missing))})")
            rows = []
            for line, raw in enumerate(reader, start=2):
                try:
                    raw["width"], raw["height"] = int(raw["width"] or 0), int(raw["height"] or 0)
                except ValueError:
                    raise MpoxscanError(f"{path}:{line}: width/height are not integers") from None
                if raw["status"] not in STATUSES:
                    raise MpoxscanError(f"{path}:{line}: unknown status '{raw['status']}'")
                rows.append(ManifestRow(**{k: raw.get(k, "") for k in COLUMNS}))
            return rows
    except FileNotFoundError:
        raise MpoxscanError(f"{path}: no such manifest") from None
    except UnicodeDecodeError:
        raise MpoxscanError(f"{path}: not a text CSV file") from None


def manifest_digest(path: Path) -> str:
    """SHA-256 of the manifest file: what a checkpoint and a run record of the data they came from."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def rows_digest(rows: list[ManifestRow]) -> str:
    """SHA-256 of what a model learns from: each kept row's image checksum, label and patient group, in order.
    Unlike :func:`manifest_digest` it does not change when curate adds a column (the ITA did) or the data moves."""
    text = "\n".join(f"{r.sha256}\t{r.label}\t{r.group}" for r in rows)
    return hashlib.sha256(text.encode()).hexdigest()


def same_training_data(manifest: Path, data_card: dict) -> bool:
    """Whether ``manifest`` holds the rows a checkpoint (its card's ``data``) was trained on: by the rows' digest
    when the card has one, else (older cards) by the manifest file's bytes."""
    if data_card.get("rows_sha256"):
        return rows_digest(kept_rows(manifest)) == data_card["rows_sha256"]
    return manifest_digest(manifest) == data_card.get("manifest_sha256")


def kept_rows(manifest: Path) -> list[ManifestRow]:
    """The rows curation kept (what training, cross-validation and export use); an error if there are none."""
    rows = [r for r in read_manifest(manifest) if r.status == "kept"]
    if not rows:
        raise MpoxscanError(f"{manifest}: no kept images")
    return rows


def row_ita(row: ManifestRow) -> float | None:
    """The row's skin tone (ITA, degrees) as a number; None when the photo showed too little skin."""
    return float(row.ita) if row.ita else None
