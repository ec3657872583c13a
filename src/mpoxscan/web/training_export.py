"""`mpoxscan cases export`: the consented, expert-labelled cases as a source folder that `mpoxscan curate` reads like
any other. No web code here: a SQLAlchemy session, the photo store and the file system.

The folder (``DIR``)::

    DIR/<label>/case-<id>_<position>.jpg   every photo of a case (as stored: metadata already stripped), one folder
                                           per class of the expert's label; <id> is the case's export id
                                           (security.export_id: a keyed hash of its number), so that
                                           ``--group 'NAME=^case-([0-9a-f]{20})_'`` makes one group of each case
    DIR/_meta/cases.jsonl                  the manifest: one JSON object per case (curate skips folders starting
                                           with "_"): provenance, never a token, e-mail, PIN, number or free text
    DIR/_meta/export.json                  the export's own record: format, schema, time, counts, and the journal
                                           of a run in progress

Which cases: answered, with the training consent, labelled with a class (not "unsure", nor unlabelled) and not
concluded "retake-photo"; a case whose consent was withdrawn (or that was withdrawn whole after giving it) leaves
the folder at the next run, by the export ids kept in ``training_withdrawals``. A case deleted by the retention
purge (`--keep-days`) stays: its person had not withdrawn, and the database no longer holds it to export again.

Idempotent and crash-safe: a run writes only the new photos, into ``_meta/staging``, and the new manifest beside the
old, then commits by replacing ``export.json`` (state "applying", with the list of moves and deletions) in one rename;
only then are the photos moved into place and the dropped ones deleted. A crash before that rename leaves the
previous export as it was (the staged files lie under ``_meta``, which curate skips); a crash after it is finished by
the next run before anything else. Hand-written because no library journals a folder of files this way.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, selectinload

from mpoxscan.errors import MpoxscanError
from mpoxscan.web.cases import LABEL_FOLDER, QUESTIONS, UNEXPORTED_VERDICTS, UNSURE, photos_of
from mpoxscan.web.security import EXPORT_ID_DIGITS, export_id
from mpoxscan.web.store import StorageUnavailable, fcntl  # fcntl: None off POSIX (no lock, as the photo folder's)
from mpoxscan.web.tables import AuditEvent, Case, Message, TrainingWithdrawal, utcnow

FORMAT = "mpoxscan-expert-cases/1"
META = "_meta"
MANIFEST = "cases.jsonl"
RECORD = "export.json"
STAGING = "staging"
LOCK = "lock"
#: The --group regex of an export for `mpoxscan curate` (first capture group: the case, curate's patient id).
GROUP_REGEX = rf"^case-([0-9a-f]{{{EXPORT_ID_DIGITS}}})_"
#: A photo file of the export: <label>/case-<id>_<position>.jpg.
_PHOTO = re.compile(rf"case-([0-9a-f]{{{EXPORT_ID_DIGITS}}})_([1-9])\.jpg")


class ExportError(MpoxscanError):
    """An export that cannot run (the folder holds other files, the schema is old, ...): one line."""


@dataclass
class ExportReport:
    out: Path
    exported_at: str
    cases: int
    photos: int
    by_class: dict[str, int]
    added: int  # cases new in this run (or whose photos changed folder: a label changed)
    removed: int  # cases dropped: consent withdrawn, relabelled "unsure" / "retake-photo"
    kept_after_deletion: int  # cases the retention purge deleted from the database, kept in the folder
    missing: int = 0  # eligible cases skipped: a photo missing from the photo store (or a label no folder can be)
    recovered: bool = False  # a crashed run's journal was finished first
    changed_files: int = 0  # photos written or deleted by this run


def check_schema(engine: Engine) -> str:
    """The database's schema revision if it is this version's newest; ExportError otherwise (the export never
    migrates a database as a side effect)."""
    from mpoxscan.web.db import schema_revisions

    current, head, known = schema_revisions(engine)
    if current is None:
        raise ExportError("the database holds no mpoxscan schema: nothing to export (check --data-dir / --db)")
    if not known:
        raise ExportError(f"the database's schema {current} is newer than this version of mpoxscan knows: export "
                          f"with the version that serves it")
    if current != head:
        raise ExportError(f"the database's schema {current} is older than this version's {head}: start `mpoxscan "
                          f"serve` with it once (it migrates on start), then export")
    return current


#: The export holds people's photos: owner-only, as the data folder that they come from (0700, its files 0600).
FOLDER_MODE, FILE_MODE = 0o700, 0o600


def _write_file(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    os.fchmod(fd, FILE_MODE)  # a file left by a crashed run keeps no other mode
    with open(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _make_folder(folder: Path, parents: bool = False) -> None:
    """A folder of the export, owner-only (a folder that exists is left as it is: its owner chose its mode)."""
    folder.mkdir(mode=FOLDER_MODE, parents=parents, exist_ok=True)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace_durably(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.part")
    _write_file(tmp, data)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def skin_tone(shot, jpeg: bytes) -> tuple[float | None, str | None]:
    """The photo's ITA (degrees; data.skin.working_ita, as curate measures it) and its Del Bino bin; (None, None)
    without enough skin. Measured when the case arrived with the training consent (case_photos.ita); a photo
    without it (a row written by hand) is measured now."""
    from mpoxscan.data.skin import ita_bin, working_ita

    value = shot.ita if shot.ita is not None else working_ita(jpeg)
    return (None if value is None else round(value, 2)), ita_bin(value)


def _write_all(files: dict[Path, bytes]) -> None:
    """Write and fsync every file; the fsyncs in threads, so that the file system commits them together (one at a
    time, 10,000 photos took a minute of fsyncs alone)."""
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda item: _write_file(*item), files.items()))


# The folder's state: the previous manifest, the journal, and what belongs to the export.

def _read_json(path: Path, what: str):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ExportError(f"{path} is not {what} ({type(exc).__name__}): choose a new --out folder") from None


def _is_photo_path(relpath) -> bool:
    """Whether ``relpath`` names a photo file of an export, <label>/case-<id>_<position>.jpg: what the manifest and
    a run's record may list (and so what a run may move or delete). Anything else (a path out of the folder among
    them) means the file was not written by an export."""
    if not isinstance(relpath, str):
        return False
    parts = relpath.split("/")
    return len(parts) == 2 and bool(LABEL_FOLDER.fullmatch(parts[0])) and bool(_PHOTO.fullmatch(parts[1]))


_RECORD_KEYS = {"case", "label", "confirmed", "photos", "exported_at", "on_server"}
_PHOTO_KEYS = {"file", "sha256"}


def _read_manifest(meta: Path) -> dict[str, dict]:
    path = meta / MANIFEST
    if not path.exists():
        return {}
    records = {}
    try:
        for line in path.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                # What a later run reads of a line (a line without it was not written by an export).
                if not (_RECORD_KEYS <= set(record) and isinstance(record["case"], str)
                        and all(_PHOTO_KEYS <= set(photo) and _is_photo_path(photo["file"])
                                for photo in record["photos"])):
                    raise ValueError("not a line that an export writes")
                records[record["case"]] = record
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ExportError(f"{path} is not an export manifest ({type(exc).__name__}): choose a new --out folder") from None
    return records


def _roll_forward(out: Path, record: dict) -> bool:
    """Finish a run that crashed after its commit (state "applying"): move the staged photos into place, delete the
    dropped ones, put the new manifest in place. Every step can be done twice. Returns whether there was one."""
    meta = out / META
    if record.get("state") != "applying":
        return False
    for relpath in record.get("add", []):
        staged, target = meta / STAGING / Path(relpath).name, out / relpath
        if staged.exists():
            _make_folder(target.parent)
            os.replace(staged, target)
    for relpath in record.get("remove", []):
        (out / relpath).unlink(missing_ok=True)
    if (meta / f"{MANIFEST}.new").exists():
        os.replace(meta / f"{MANIFEST}.new", meta / MANIFEST)
    touched = {Path(p).parts[0] for p in [*record.get("add", []), *record.get("remove", [])]}
    for folder in sorted(touched):
        if (out / folder).is_dir():
            _fsync_dir(out / folder)
            if not any((out / folder).iterdir()):
                (out / folder).rmdir()  # a class the export no longer holds
    _fsync_dir(meta)
    _fsync_dir(out)
    done = {k: v for k, v in record.items() if k not in ("add", "remove")}
    _replace_durably(meta / RECORD, json.dumps({**done, "state": "complete"}, indent=2).encode())
    return True


def _foreign_files(out: Path, owned: set[str]) -> list[str]:
    """Files (and links) under ``out`` the export did not write: none may be there."""
    foreign = []
    for root, dirs, files in os.walk(out):
        base = Path(root).relative_to(out)
        for name in [*files, *(d for d in dirs if (Path(root) / d).is_symlink())]:
            relpath = (base / name).as_posix()
            if relpath in owned or _ours_in_meta(base, name):
                continue
            foreign.append(relpath)
    return sorted(foreign)


def _ours_in_meta(base: Path, name: str) -> bool:
    """What a run leaves in _meta besides the manifest and the record: staged photos, the new manifest and the
    record's temporary copies (a crashed run's), the lock file."""
    if base == Path(META):
        return name in (LOCK, f"{MANIFEST}.new", f".{RECORD}.part", f".{MANIFEST}.new.part")
    return base == Path(META) / STAGING and bool(_PHOTO.fullmatch(name))


def _previous(out: Path, finish: bool = True) -> tuple[dict[str, dict], bool]:
    """The previous export's manifest, after finishing its journal if it crashed (``finish``), and whether it had
    to; ExportError when ``out`` holds anything this export did not write."""
    meta = out / META
    if not (meta / RECORD).exists():
        foreign = _foreign_files(out, set())  # a first run that crashed before its commit left only _meta's files
        if foreign:
            raise ExportError(f"{out} holds files this export did not write (e.g. {foreign[0]}): export into a new or "
                              f"empty folder, or into one an earlier export wrote")
        return {}, False
    record = _read_json(meta / RECORD, "an export record")
    moves = [*record.get("add", []), *record.get("remove", [])] if isinstance(record, dict) else []
    if (not isinstance(record, dict) or record.get("format") != FORMAT
            or not isinstance(moves, list) or not all(map(_is_photo_path, moves))):
        raise ExportError(f"{meta / RECORD} is not the record of an export in format {FORMAT}: choose a new --out folder")
    # A crashed run's moves and deletions are checked too: they belong to the export.
    pending = {*record.get("add", []), *record.get("remove", [])} if record.get("state") == "applying" else set()
    manifest = _read_manifest(meta)
    owned = {f"{META}/{RECORD}", f"{META}/{MANIFEST}", *pending,
             *(p["file"] for r in manifest.values() for p in r["photos"])}
    foreign = _foreign_files(out, owned)
    if foreign:
        raise ExportError(f"{out} holds files this export did not write (e.g. {foreign[0]}): remove them, or export "
                          f"into a new folder")
    recovered = finish and _roll_forward(out, record)
    return (_read_manifest(meta) if recovered else manifest), recovered


# What the database holds.

def _answers(case: Case) -> dict[str, str | None]:
    return {q: getattr(case, q) for q in QUESTIONS}


def eligible_cases(db: Session, withdrawn: set[str]) -> list[tuple[str, Case]]:
    """(export id, case) of every case an export holds: answered, the training consent given (and not withdrawn),
    labelled with a class, never concluded "retake-photo" (now or before a new photo came: its stored photos are
    the ones the expert found too poor)."""
    retaken = Case.messages.any((Message.kind == "conclusion") & Message.canned.in_(UNEXPORTED_VERDICTS))
    query = (select(Case).where(Case.status == "answered", Case.training_consent.is_(True), Case.label.is_not(None),
                                Case.label != UNSURE, Case.verdict.not_in(UNEXPORTED_VERDICTS), ~retaken)
             .options(selectinload(Case.photos)).order_by(Case.id))
    cases = [(export_id(c.number, c.token_hash), c) for c in db.scalars(query)]
    return [(key, case) for key, case in cases if key not in withdrawn]


def _case_record(key: str, case: Case, photos: list[dict], exported_at: str) -> dict:
    """One manifest line: provenance, never the number, the token, a PIN, an e-mail or free text."""
    return {"case": key, "label": case.label, "confirmed": case.label_test is not None, "test": case.label_test,
            "test_result": case.label_test_result, "verdict": case.verdict, "answers": _answers(case),
            "model_sha256": case.model_sha256, "photos": photos, "exported_at": exported_at, "on_server": True}


@dataclass
class _Plan:
    records: dict[str, dict]
    staged: dict[str, bytes]  # relpath -> photo bytes to write
    added: int = 0
    missing: int = 0


def _plan(db: Session, store, out: Path, previous: dict[str, dict], now: str) -> _Plan:
    withdrawn = set(db.scalars(select(TrainingWithdrawal.export_id)))
    in_database = {export_id(number, token) for number, token in db.execute(select(Case.number, Case.token_hash))}
    plan = _Plan(records={}, staged={})
    for key, case in eligible_cases(db, withdrawn):
        if not LABEL_FOLDER.fullmatch(case.label):  # answer_case never stores one; a row written by hand might
            plan.missing += 1
            continue
        before = previous.get(key)
        shots = photos_of(case)
        wanted = [(p, f"{case.label}/case-{key}_{p.position}.jpg") for p in shots]
        reuse = {ph["file"]: ph for ph in (before or {}).get("photos", [])}
        photos, complete = [], True
        for shot, relpath in wanted:
            old = reuse.get(relpath)
            if old is not None and old["sha256"] == shot.photo_sha256 and (out / relpath).is_file():
                photos.append(old)  # in place from an earlier run: its skin tone measured then
                continue
            data = store.read(shot.photo_file)
            if data is None:
                complete = False
                break
            plan.staged[relpath] = data
            tone, tone_bin = skin_tone(shot, data)
            photos.append({"file": relpath, "position": shot.position, "sha256": hashlib.sha256(data).hexdigest(),
                           "ita": tone, "ita_bin": tone_bin, "server_predicted": shot.predicted,
                           "server_answer": shot.answer})
        if not complete:  # a photo gone from the store: the case is not exported incomplete
            plan.missing += 1
            for _shot, relpath in wanted:
                plan.staged.pop(relpath, None)
            continue
        if before is None or {p["file"] for p in before["photos"]} != {p["file"] for p in photos}:
            plan.added += 1
        plan.records[key] = _case_record(key, case, photos, before["exported_at"] if before else now)
    for key, before in previous.items():
        # Deleted from the database by the retention purge, not withdrawn: the exported photos stay.
        if key not in plan.records and key not in in_database and key not in withdrawn:
            kept = [p for p in before["photos"] if (out / p["file"]).is_file()]
            if kept:
                plan.records[key] = {**before, "photos": kept, "on_server": False}
    return plan


def _clean_leftovers(meta: Path) -> None:
    """What a run that crashed before its commit left in _meta (its staged photos, its new manifest): the export
    it would have written is computed again from the database."""
    shutil.rmtree(meta / STAGING, ignore_errors=True)
    for name in (f"{MANIFEST}.new", f".{RECORD}.part", f".{MANIFEST}.new.part"):
        (meta / name).unlink(missing_ok=True)


def _lock(meta: Path) -> int:
    fd = os.open(meta / LOCK, os.O_RDWR | os.O_CREAT, FILE_MODE)
    if fcntl is None:
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ExportError(f"another `mpoxscan cases export` is writing {meta.parent}: wait for it") from None
    return fd


def export_cases(db: Session, store, out: Path, now: datetime | None = None) -> ExportReport:
    """Bring the export folder ``out`` up to date with the database (see the module's docstring), audit-logged.
    ``store``: the photo store (folder or database). ExportError with one line when it cannot (a database at another
    schema than this version's among the reasons: it is never migrated here)."""
    schema = check_schema(db.get_bind())
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} is a file: --out must be a folder")
    if (out / META).is_symlink():
        raise ExportError(f"{out} holds files this export did not write (e.g. {META}): choose a new --out folder")
    try:
        _make_folder(out, parents=True)
        _previous(out, finish=False)  # refused before anything is written into a folder that is not an export's
        _make_folder(out / META)
        lock = _lock(out / META)
    except OSError as exc:
        raise ExportError(f"cannot write the export to {out}: {exc.strerror or exc}") from None
    try:
        previous, recovered = _previous(out)  # read again under the lock: another run may have finished meanwhile
        _clean_leftovers(out / META)
        stamp = (now or utcnow()).isoformat(timespec="seconds")
        try:
            plan = _plan(db, store, out, previous, stamp)
        except StorageUnavailable as exc:
            raise ExportError(f"cannot read the photos: {exc}") from None
        report = _apply(out, previous, plan, stamp, recovered, schema)
    except OSError as exc:
        raise ExportError(f"cannot write the export to {out}: {exc.strerror or exc}") from None
    finally:
        os.close(lock)
    db.add(AuditEvent(action="cases exported", detail=(
        f"{report.cases} case(s), {report.photos} photo(s) to {out.resolve()}: {report.added} added, "
        f"{report.removed} removed, {report.kept_after_deletion} kept after deletion")[:2000]))
    db.commit()
    return report


def _apply(out: Path, previous: dict[str, dict], plan: _Plan, stamp: str, recovered: bool,
           schema: str) -> ExportReport:
    meta = out / META
    old_files = {p["file"] for r in previous.values() for p in r["photos"]}
    new_files = {p["file"] for r in plan.records.values() for p in r["photos"]}
    add = sorted(plan.staged)
    remove = sorted(old_files - new_files)
    by_class = Counter(r["label"] for r in plan.records.values())
    summary = {"format": FORMAT, "schema": schema, "exported_at": stamp, "group_regex": GROUP_REGEX,
               "cases": len(plan.records),
               "photos": len(new_files), "by_class": dict(sorted(by_class.items())),
               "confirmed": sum(r["confirmed"] for r in plan.records.values())}
    removed = sum(1 for key in previous if key not in plan.records)
    report = ExportReport(out=out, exported_at=stamp, cases=len(plan.records), photos=len(new_files),
                          by_class=summary["by_class"], added=plan.added, removed=removed,
                          kept_after_deletion=sum(not r["on_server"] for r in plan.records.values()),
                          missing=plan.missing, recovered=recovered, changed_files=len(add) + len(remove))
    manifest = "".join(json.dumps(plan.records[k], sort_keys=True) + "\n" for k in sorted(plan.records))
    if not add and not remove and (meta / MANIFEST).exists() and (meta / MANIFEST).read_text() == manifest:
        _replace_durably(meta / RECORD, json.dumps({**summary, "state": "complete"}, indent=2).encode())
        return report  # nothing changed but the time of the last run
    staging = meta / STAGING
    _make_folder(staging)
    _write_all({staging / Path(relpath).name: plan.staged[relpath] for relpath in add})
    _fsync_dir(staging)
    _replace_durably(meta / f"{MANIFEST}.new", manifest.encode())
    # The commit: from this rename on, the new export is what the folder holds (the next run finishes it).
    _replace_durably(meta / RECORD, json.dumps({**summary, "state": "applying", "add": add, "remove": remove},
                                               indent=2).encode())
    _roll_forward(out, {**summary, "state": "applying", "add": add, "remove": remove})
    shutil.rmtree(staging, ignore_errors=True)
    return report


def curate_command(out: Path, source: str = "expert") -> str:
    """The `mpoxscan curate` command line that reads an export as a source (one group per case)."""
    return f"mpoxscan curate {source}={out} --group '{source}={GROUP_REGEX}' --out curated/{source}"

