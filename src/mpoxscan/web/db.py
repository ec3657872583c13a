"""The database: SQLite in the data folder by default, PostgreSQL with a postgresql:// URL; migrated on start."""

from __future__ import annotations

import os
import weakref
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from mpoxscan.web.store import StorageUnavailable

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Each SQLite engine's file and the (device, inode) it opened: what the commit guard and /healthz compare.
_SQLITE_FILES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def default_data_dir() -> Path:
    """Where cases are kept unless --data-dir says otherwise: $XDG_DATA_HOME/mpoxscan (~/.local/share/mpoxscan)."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "mpoxscan"


def database_url(db: str | None, data_dir: Path) -> str:
    """The SQLAlchemy URL: ``db`` as given (postgresql://... uses the psycopg 3 driver), else SQLite in ``data_dir``."""
    if not db:
        return f"sqlite:///{(data_dir / 'mpoxscan.sqlite3').resolve()}"
    if db.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + db.split("://", 1)[1]
    return db


def make_engine(url: str) -> Engine:
    """``hide_parameters``: a failed statement's log line and exception never carry the values bound to it (an
    e-mail address, an expert's message)."""
    if url.startswith("sqlite"):
        # Concurrent uploads each write a row: wait for the lock instead of failing, and let readers run beside the
        # writer (write-ahead log). Foreign keys are off by default in SQLite.
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, hide_parameters=True)
        path = engine.url.database
        file_backed = bool(path) and path != ":memory:" and not path.startswith("file:")
        identity: dict[str, tuple[int, int]] = {}

        def check_file() -> None:
            """A commit into a database file that was deleted (or replaced) under the running server would answer
            2xx and be lost with the unlinked inode: refuse it (StorageUnavailable: a 503) instead."""
            problem = sqlite_file_problem(path, identity.get("file"))
            if problem:
                raise StorageUnavailable(f"cannot store: {problem}")

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            # FULL: in WAL mode each commit is fsynced before it returns, so a case whose sender got its number
            # survives a power cut (NORMAL may lose the last commits; it only guarantees consistency).
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.close()
            if file_backed:
                if "file" not in identity:
                    st = os.stat(path)
                    identity["file"] = (st.st_dev, st.st_ino)
                else:
                    check_file()

        if file_backed:
            event.listen(engine, "commit", lambda _connection: check_file())
            _SQLITE_FILES[engine] = (path, identity)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20, hide_parameters=True)


def sqlite_file_problem(path: str, identity: tuple[int, int] | None) -> str | None:
    """None when the SQLite file is still at ``path`` and is the file the engine opened (``identity``: its device
    and inode); else what happened, in a few words."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "the database file is missing (the data folder was deleted or moved)"
    except OSError as exc:
        return f"the database file cannot be read ({exc.strerror or type(exc).__name__})"
    if identity is not None and (st.st_dev, st.st_ino) != identity:
        return "the database file was replaced under the running server"
    return None


def database_problem(engine: Engine) -> str | None:
    """What /healthz and the commit guard check: None when the SQLite file (if any) is the one opened and a write
    transaction goes through (rolled back: nothing is kept); else the failure in a few words (never a driver's
    text, which can name paths or parameters)."""
    from sqlalchemy import text

    sqlite_file = _SQLITE_FILES.get(engine) if isinstance(engine, Engine) else None
    if sqlite_file:
        path, identity = sqlite_file
        problem = sqlite_file_problem(path, identity.get("file"))
        if problem:
            return problem
    try:
        with engine.connect() as connection:
            with connection.begin() as transaction:
                # A write the database must accept: the migrations' own version table, set to what it already holds.
                connection.execute(text("UPDATE alembic_version SET version_num = version_num"))
                transaction.rollback()
        return None
    except Exception as exc:  # any driver error means the same thing here: cases cannot be stored
        return type(exc).__name__


def migrate(engine: Engine, revision: str = "head") -> str:
    """Bring the schema to an Alembic revision (the newest by default; an older one lets the tests store rows as an
    older version did); returns the newest revision."""
    from alembic import command
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
    return ScriptDirectory.from_config(config).get_current_head()


def schema_revisions(engine: Engine) -> tuple[str | None, str, bool]:
    """(the database's Alembic revision or None for no schema, this version's newest, whether this version knows
    the database's revision): for commands that must not migrate a database as a side effect (`cases export`)."""
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    script = ScriptDirectory.from_config(config)
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    known = current is None or any(r.revision == current for r in script.walk_revisions())
    return current, script.get_current_head(), known


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
