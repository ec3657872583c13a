"""The database: SQLite in the data folder by default, PostgreSQL with a postgresql:// URL; migrated on start."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


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

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20, hide_parameters=True)


def migrate(engine: Engine) -> str:
    """Bring the schema to the newest Alembic revision; returns that revision."""
    from alembic import command
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    return ScriptDirectory.from_config(config).get_current_head()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
