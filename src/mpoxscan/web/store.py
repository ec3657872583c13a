"""The photo store: each case's metadata-free JPEGs (one to three) in ``DATA_DIR/photos``, written durably, deleted
before its case row, and swept of files no case owns. Storage failures become :class:`StorageUnavailable` (a 503 with
a reason).

Naming rule (what the sweep relies on): a stored file belongs to a case when its name *starts with the stem of the
case's ``photo_file``* and the next character, if any, is not a letter or a digit: ``3f2a...e9.jpg`` is the (first)
photo; its heat map ``3f2a...e9.heatmap.png``, the case's other photos ``3f2a...e9.2.jpg``, ``3f2a...e9.3.jpg`` and
their maps ``3f2a...e9.2.heatmap.png``, and photos the person sent in reply to the expert
(``3f2a...e9.reply-<hex>.jpg``) lie beside it and are kept as long as the case is. The stems are random
(uuid4 hex), never the case number. Temporary files are hidden (``.NAME.part``); the lock file lies beside the folder
(``DATA_DIR/photos.lock``), not in it."""

from __future__ import annotations

import errno
import os
import re
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

try:  # POSIX only: elsewhere the sweep keeps to the grace period
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

#: A sweep that cannot be sure that no other server process is running deletes only files at least this old. A
#: submission writes its photo and commits its case row within seconds (SQLite waits at most 30 s for its lock per
#: try); an hour leaves every in-flight submission of another worker alone, and costs only disk space meanwhile.
SWEEP_GRACE_S = 3600
_STEM = re.compile(r"[A-Za-z0-9]+")
# The errors that mean "the disk cannot take this now" (a 503), not a bug in the request or the code.
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.ENOENT,
                  errno.ENOTDIR, errno.ESTALE}


class StorageUnavailable(Exception):
    """The data folder or the database cannot store (or delete) now: full, read-only, missing. ``str()`` is one
    line for the person (no path, no parameter): the app answers it as a 503."""


def storage_reason(exc: OSError) -> str:
    """One line for an OSError of the disk, without the path it names."""
    reasons = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
               errno.EROFS: "the data folder is read-only", errno.EACCES: "the data folder is not writable",
               errno.EPERM: "the data folder is not writable", errno.ENOENT: "the data folder is missing",
               errno.ENOTDIR: "the data folder is missing", errno.EIO: "the disk failed to read or write",
               errno.ESTALE: "the data folder is gone (stale file handle)"}
    return reasons.get(exc.errno, f"the disk failed ({exc.strerror or type(exc).__name__})")


def database_reason(exc: Exception) -> str:
    """One line for a database that cannot write, from a fixed vocabulary (a driver's own text can hold paths,
    host names or parameters)."""
    text = str(getattr(exc, "orig", None) or "").lower()
    for needle, reason in (("full", "the disk is full"), ("readonly", "the database is read-only"),
                           ("read-only", "the database is read-only"), ("disk i/o", "the disk failed to read or write"),
                           ("unable to open", "the database file cannot be opened"),
                           ("locked", "the database is busy"), ("connect", "the database cannot be reached")):
        if needle in text:
            return reason
    return f"the database failed ({type(getattr(exc, 'orig', None) or exc).__name__})"


def _fsync_dir(folder: Path) -> None:
    """Make a rename or an unlink in ``folder`` durable: a crash after the rename must not lose the file's name."""
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class PhotoStore:
    """The stored photos: one metadata-free JPEG per case under ``root``, named by a random id (not the case)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._serving_lock: int | None = None

    @property
    def lock_path(self) -> Path:
        return self.root.with_name(self.root.name + ".lock")

    def save(self, jpeg: bytes) -> str:
        """Write durably before the case row is committed: a temporary file, fsync, rename, fsync of the folder.
        A crash never leaves half a photo under a case's name; a failure (full disk) removes the temporary file and
        raises StorageUnavailable."""
        name = f"{uuid.uuid4().hex}.jpg"
        self._write(self.root / name, jpeg, "photo")
        return name

    def save_extra(self, name: str, position: int, jpeg: bytes) -> str:
        """Write a case's photo ``position`` (2, 3) beside its first photo ``name``, as durably, as
        ``<stem>.<position>.jpg``: the first photo's stem owns it (deleted and swept with the case)."""
        return self.save_companion(name, f"{position}.jpg", jpeg, f"photo {position}")

    def heatmap_path(self, name: str) -> Path:
        """Where the server's heat map of photo ``name`` is kept: beside it, a companion by the naming rule (deleted
        and swept with it). It may not exist: cases stored before maps were kept get theirs on first view."""
        return self.root / companion_name(name, HEATMAP)

    def save_heatmap(self, name: str, png: bytes) -> None:
        """Write the heat map of photo ``name`` as durably as the photo (StorageUnavailable on failure)."""
        self.save_companion(name, HEATMAP, png, "heat map")

    def save_companion(self, name: str, suffix: str, data: bytes, what: str = "photo") -> str:
        """Write a file that belongs to photo ``name`` (``<stem>.<suffix>``, e.g. a reply photo ``<stem>.reply-
        <id>.jpg``) as durably as the photo: deleted and swept with it by the naming rule. Returns its name."""
        companion = companion_name(name, suffix)
        self._write(self.root / companion, data, what)
        return companion

    def _write(self, path: Path, data: bytes, what: str) -> None:
        # A temporary name of its own: two first views of an old case may draw its heat map at once.
        tmp = self.root / f".{path.name}.{uuid.uuid4().hex[:8]}.part"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            _fsync_dir(self.root)
        except OSError as exc:
            try:
                tmp.unlink(missing_ok=True)  # a full disk must not keep a .part file per upload
            except OSError:
                pass  # the start-up sweep or `cases purge` removes it
            raise StorageUnavailable(f"cannot store the {what}: {storage_reason(exc)}") from exc

    def problem(self) -> str | None:
        """None when the photo folder exists and takes a file (written, fsynced, removed); else what is wrong, in a
        few words (what /healthz reports)."""
        if not self.root.is_dir():
            return "missing"
        probe = self.root / f".healthz-{uuid.uuid4().hex}.part"
        try:
            with open(probe, "wb") as fh:
                fh.write(b"ok")
                fh.flush()
                os.fsync(fh.fileno())
            probe.unlink()
            return None
        except OSError as exc:
            probe.unlink(missing_ok=True)
            return exc.strerror or type(exc).__name__

    def path(self, name: str) -> Path:
        return self.root / Path(name).name

    def read(self, name: str) -> bytes | None:
        """Photo ``name``'s bytes, or None when it is missing (removed by hand from the server's disk)."""
        return _read_file(self.path(name))

    def read_heatmap(self, name: str) -> bytes | None:
        """The stored heat map of photo ``name``, or None when none is kept yet."""
        return _read_file(self.heatmap_path(name))

    def delete(self, name: str) -> None:
        """Remove a case's photo (and any file that belongs to it by the naming rule), durably; a photo already gone
        is fine. Raises StorageUnavailable when the file cannot be removed or the folder is missing (an unmounted
        volume still holds the photo: its case row must stay)."""
        if not self.root.is_dir():
            raise StorageUnavailable("cannot delete the photo: the photo folder is missing")
        try:
            for path in [self.path(name), *self._companions(Path(name).stem)]:
                path.unlink(missing_ok=True)
            _fsync_dir(self.root)
        except OSError as exc:
            raise StorageUnavailable(f"cannot delete the photo: {storage_reason(exc)}") from exc

    def delete_file(self, name: str) -> None:
        """Remove this one file and nothing else (a companion written for a row that was not kept); delete() is
        for a case: its photo and everything that belongs to it."""
        try:
            self.path(name).unlink(missing_ok=True)
            _fsync_dir(self.root)
        except OSError as exc:
            raise StorageUnavailable(f"cannot delete the photo: {storage_reason(exc)}") from exc

    def _companions(self, stem: str) -> list[Path]:
        return [p for p in self.root.glob(f"{stem}*") if p.name != f"{stem}.jpg" and owner_stem(p.name) == stem]

    # The sweep and the lock that makes it safe.

    def hold_serving_lock(self) -> None:
        """Held (shared) by every process that stores photos, for its whole life: a sweep that gets the lock
        exclusively knows no other process is between writing a photo and committing its case."""
        if fcntl is None or self._serving_lock is not None:
            return
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_SH)
        self._serving_lock = fd

    def release_serving_lock(self) -> None:
        if self._serving_lock is not None:
            os.close(self._serving_lock)
            self._serving_lock = None

    def __del__(self) -> None:  # an app dropped (the tests make many) gives its lock and descriptor back
        try:
            self.release_serving_lock()
        except Exception:  # at interpreter exit the OS closes it anyway
            pass

    def sweep(self, referenced: Iterable[str], grace_s: float = SWEEP_GRACE_S) -> SweepReport:
        """Remove ``.part`` files and files that no case owns (``referenced``: every case's ``photo_file``, read
        *before* the folder is listed; see the module's naming rule).

        Why this is safe beside other workers: a photo is on disk (renamed into place) a moment before its case row
        is committed, so a sweep in another process could read the rows, miss that case, and delete its photo. Every
        serving process holds the lock file shared (:meth:`hold_serving_lock`); when this sweep gets it exclusively
        (non-blocking), no process is serving, nothing is in flight, and every unowned file is an orphan: all go
        (this is the start-up after a crash). When it cannot (other workers serve, or `cases purge` runs beside a
        server), only files older than ``grace_s`` go, which no in-flight submission can be."""
        owners = {Path(name).stem for name in referenced}
        exclusive = self._try_exclusive()
        try:
            cutoff = time.time() - (0 if exclusive else grace_s)
            removed, kept_young = [], 0
            for path in self.root.iterdir():
                name = path.name
                if name.startswith("."):
                    if not name.endswith(".part"):
                        continue  # not ours
                elif owner_stem(name) in owners:
                    continue
                try:
                    st = path.lstat()
                    if not path.is_file() or path.is_symlink():
                        continue
                    if st.st_mtime > cutoff:
                        kept_young += 1
                        continue
                    path.unlink()
                    removed.append(name)
                except FileNotFoundError:
                    continue  # renamed or removed meanwhile (a .part becoming a photo)
            if removed:
                _fsync_dir(self.root)
            return SweepReport(removed=removed, kept_young=kept_young, exclusive=exclusive)
        finally:
            if exclusive:
                self._unlock_exclusive(exclusive)

    def _try_exclusive(self) -> int | None:
        if fcntl is None:
            return None
        if self._serving_lock is not None:  # this process serves: another sweep must not see it as idle
            fcntl.flock(self._serving_lock, fcntl.LOCK_UN)
            fd, own = self._serving_lock, True
        else:
            fd, own = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600), False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if own:
                fcntl.flock(fd, fcntl.LOCK_SH)
            else:
                os.close(fd)
            return None

    def _unlock_exclusive(self, fd: int) -> None:
        if fd == self._serving_lock:
            fcntl.flock(fd, fcntl.LOCK_SH)  # back to serving
        else:
            os.close(fd)


def _read_file(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return None
    except OSError as exc:
        raise StorageUnavailable(f"cannot read the photo: {storage_reason(exc)}") from exc


#: The PostgreSQL advisory lock that plays the part of the folder store's lock file for the database store: held
#: shared by every serving process (on any host), taken exclusively by a sweep that wants to know none is serving.
_ADVISORY_KEY = 0x6D706F78  # "mpox"


class DatabasePhotoStore:
    """The photo store in the database (``serve --photo-store db``): each photo and heat map is a row of
    ``stored_photos`` named by the same rule as the folder store's files, so that every worker on every host serves
    the same photos from the database it already shares (PostgreSQL), with no shared file system.

    The same guarantees as the folder store: a photo's row is committed (PostgreSQL fsyncs its log on commit) before
    its case row, and deleted before it; a failure is StorageUnavailable (a 503), never a case without its photo.
    The sweep of rows no case owns is made safe by an advisory lock (PostgreSQL) held shared while serving, exactly
    as the lock file is for the folder; on SQLite (one machine, tests) there is no such lock, so a sweep always
    spares rows younger than the grace period."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self._lock_connection = None

    def save(self, jpeg: bytes) -> str:
        name = f"{uuid.uuid4().hex}.jpg"
        self._write(name, jpeg, "photo")
        return name

    def save_extra(self, name: str, position: int, jpeg: bytes) -> str:
        """A case's photo ``position`` (2, 3) as a row named ``<stem>.<position>.jpg`` (see PhotoStore.save_extra)."""
        return self.save_companion(name, f"{position}.jpg", jpeg, f"photo {position}")

    def heatmap_name(self, name: str) -> str:
        return companion_name(name, HEATMAP)

    def save_heatmap(self, name: str, png: bytes) -> None:
        self.save_companion(name, HEATMAP, png, "heat map")

    def save_companion(self, name: str, suffix: str, data: bytes, what: str = "photo") -> str:
        companion = companion_name(name, suffix)
        self._write(companion, data, what)
        return companion

    def _write(self, name: str, data: bytes, what: str) -> None:
        from sqlalchemy import delete, insert
        from sqlalchemy.exc import DBAPIError, IntegrityError

        from mpoxscan.web.tables import StoredPhoto, utcnow

        try:
            with self.engine.begin() as connection:
                connection.execute(delete(StoredPhoto).where(StoredPhoto.name == name))  # a heat map drawn again
                connection.execute(insert(StoredPhoto).values(name=name, data=data, created_at=utcnow()))
        except IntegrityError:
            if what.startswith("photo"):
                raise
            # Two first views of an old case drew its heat map at once: the other one's copy is the same map.
        except DBAPIError as exc:
            raise StorageUnavailable(f"cannot store the {what}: {database_reason(exc)}") from exc

    def _read(self, name: str) -> bytes | None:
        from sqlalchemy import select
        from sqlalchemy.exc import DBAPIError

        from mpoxscan.web.tables import StoredPhoto

        try:
            with self.engine.connect() as connection:
                return connection.scalar(select(StoredPhoto.data).where(StoredPhoto.name == name))
        except DBAPIError as exc:
            raise StorageUnavailable(f"cannot read the photo: {database_reason(exc)}") from exc

    def read(self, name: str) -> bytes | None:
        return self._read(Path(name).name)

    def read_heatmap(self, name: str) -> bytes | None:
        return self._read(self.heatmap_name(name))

    def names(self) -> list[str]:
        """Every stored name (photos and heat maps)."""
        from sqlalchemy import select

        from mpoxscan.web.tables import StoredPhoto

        with self.engine.connect() as connection:
            return list(connection.scalars(select(StoredPhoto.name)))

    def delete(self, name: str) -> None:
        """Remove a case's photo and the rows that belong to it by the naming rule (a photo already gone is fine)."""
        from sqlalchemy import delete, select
        from sqlalchemy.exc import DBAPIError

        from mpoxscan.web.tables import StoredPhoto

        stem = Path(name).stem
        if not _STEM.fullmatch(stem):  # stems are hex: nothing else can own a row (and no LIKE wildcard slips in)
            return
        try:
            with self.engine.begin() as connection:
                rows = connection.scalars(select(StoredPhoto.name).where(StoredPhoto.name.like(f"{stem}%")))
                mine = [n for n in rows if owner_stem(n) == stem]
                if mine:
                    connection.execute(delete(StoredPhoto).where(StoredPhoto.name.in_(mine)))
        except DBAPIError as exc:
            raise StorageUnavailable(f"cannot delete the photo: {database_reason(exc)}") from exc

    def delete_file(self, name: str) -> None:
        from sqlalchemy import delete
        from sqlalchemy.exc import DBAPIError

        from mpoxscan.web.tables import StoredPhoto

        try:
            with self.engine.begin() as connection:
                connection.execute(delete(StoredPhoto).where(StoredPhoto.name == Path(name).name))
        except DBAPIError as exc:
            raise StorageUnavailable(f"cannot delete the photo: {database_reason(exc)}") from exc

    def problem(self) -> str | None:
        """None when a photo row can be written (inserted, then rolled back); else the failure in a few words."""
        from sqlalchemy import insert

        from mpoxscan.web.tables import StoredPhoto, utcnow

        try:
            with self.engine.connect() as connection:
                with connection.begin() as transaction:
                    connection.execute(insert(StoredPhoto).values(name=f".healthz-{uuid.uuid4().hex}", data=b"ok",
                                                                  created_at=utcnow()))
                    transaction.rollback()
            return None
        except Exception as exc:  # a driver's text can hold host names: the kind of failure only
            return type(exc).__name__

    def _postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def hold_serving_lock(self) -> None:
        from sqlalchemy import text

        if not self._postgres() or self._lock_connection is not None:
            return
        connection = self.engine.connect()
        connection.execute(text("SELECT pg_advisory_lock_shared(:key)"), {"key": _ADVISORY_KEY})
        connection.commit()  # a session-level lock outlives the transaction: the connection is not left idle in one
        self._lock_connection = connection

    def release_serving_lock(self) -> None:
        if self._lock_connection is not None:
            from sqlalchemy import text

            try:
                # The pool's reset (a rollback) keeps session-level locks: give it back before the pool does.
                self._lock_connection.execute(text("SELECT pg_advisory_unlock_all()"))
                self._lock_connection.commit()
                self._lock_connection.close()
            except Exception:  # a lost connection has lost its lock too
                pass
            finally:
                self._lock_connection = None

    def _try_exclusive(self):
        from sqlalchemy import text

        if not self._postgres():
            return None
        own = self._lock_connection
        connection = own or self.engine.connect()
        key = {"key": _ADVISORY_KEY}
        if own is not None:
            connection.execute(text("SELECT pg_advisory_unlock_shared(:key)"), key)
        if connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), key):
            connection.commit()
            return connection
        if own is not None:
            connection.execute(text("SELECT pg_advisory_lock_shared(:key)"), key)
            connection.commit()
        else:
            connection.close()
        return None

    def _unlock_exclusive(self, connection) -> None:
        from sqlalchemy import text

        key = {"key": _ADVISORY_KEY}
        connection.execute(text("SELECT pg_advisory_unlock(:key)"), key)
        if connection is self._lock_connection:
            connection.execute(text("SELECT pg_advisory_lock_shared(:key)"), key)  # back to serving
            connection.commit()
        else:
            connection.commit()
            connection.close()

    def sweep(self, referenced: Iterable[str], grace_s: float = SWEEP_GRACE_S) -> SweepReport:
        """Delete rows no case owns (``referenced`` read before this lists the rows); see PhotoStore.sweep for why
        only rows older than ``grace_s`` go unless no other process is serving."""
        from sqlalchemy import delete, select
        from sqlalchemy.exc import DBAPIError

        from mpoxscan.web.tables import StoredPhoto, utcnow

        owners = {Path(name).stem for name in referenced}
        exclusive = self._try_exclusive()
        try:
            with self.engine.begin() as connection:
                cutoff = utcnow().timestamp() - (0 if exclusive is not None else grace_s)
                removed, kept_young = [], 0
                for name, created in connection.execute(select(StoredPhoto.name, StoredPhoto.created_at)):
                    if owner_stem(name) in owners:
                        continue
                    if created.timestamp() > cutoff:
                        kept_young += 1
                        continue
                    removed.append(name)
                if removed:
                    connection.execute(delete(StoredPhoto).where(StoredPhoto.name.in_(removed)))
            return SweepReport(removed=removed, kept_young=kept_young, exclusive=exclusive is not None)
        except DBAPIError as exc:
            raise StorageUnavailable(f"cannot sweep the photos: {database_reason(exc)}") from exc
        finally:
            if exclusive is not None:
                self._unlock_exclusive(exclusive)


#: The suffix of a photo's heat map: ``<stem>.heatmap.png``.
HEATMAP = "heatmap.png"


def companion_name(name: str, suffix: str) -> str:
    """The name of a file that belongs to photo ``name`` by the naming rule: ``<stem>.<suffix>``."""
    return f"{Path(name).stem}.{suffix}"


def owner_stem(name: str) -> str:
    """The stem a stored file's name starts with (its leading letters and digits): the case's photo stem."""
    match = _STEM.match(name)
    return match.group(0) if match else ""


@dataclass
class SweepReport:
    removed: list[str]
    kept_young: int  # unowned files younger than the grace period, left for a later sweep
    exclusive: bool  # no other process was serving: nothing had to be spared for its age
