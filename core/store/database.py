"""Opening a database: its URL, an engine with SQLite's pragmas, and the Alembic migrations applied on open.

The schema is owned by the migrations in `core/store/migrations`; `upgrade` brings any database written by an
earlier version to the head revision, safely when several processes open a new database at once (SQLite: one
immediate transaction; PostgreSQL: a transaction-level advisory lock around Alembic).

A PostgreSQL URL (`postgresql+psycopg://USER@HOST/DB`) needs psycopg 3 (`requirements-scale.txt`); without it,
`make_engine` raises a ValueError naming what to install, which the command line prints as one line (exit 2).
"""

from __future__ import annotations

import functools
import os
import threading
import time
from pathlib import Path
from typing import Any, Mapping

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, inspect, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from core import PROJECT_ROOT

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def default_url(env: Mapping[str, str] = os.environ, root: Path = PROJECT_ROOT) -> str:
    """`LOSSBOARD_DB` (a SQLAlchemy URL, or a bare file path) if set, else `experiments.db` in the project."""
    value = env.get("LOSSBOARD_DB", "").strip()
    if not value:
        return f"sqlite:///{root}/experiments.db"
    return database_url(value)


def database_url(value: str) -> str:
    """A SQLAlchemy URL as given, or a bare file path as the URL of that SQLite file (`runs.db` means
    `sqlite:////absolute/path/runs.db`). A URL SQLAlchemy cannot parse is a ValueError naming `db`."""
    value = value.strip()
    if not value:
        raise ValueError("db: give a SQLAlchemy URL (sqlite:///runs.db) or a file path (runs.db)")
    if "://" not in value:
        return f"sqlite:///{Path(value).expanduser().absolute()}"
    try:
        make_url(value)
    except ArgumentError:
        raise ValueError(f"db: {value!r} is not a database URL; use e.g. sqlite:///runs.db, "
                         "postgresql+psycopg://user@host/db, or a file path") from None
    return value


SCALE_INSTALL = "pip install -r requirements-scale.txt"  # psycopg (PostgreSQL) and dask[distributed]


def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite files get their folder created and WAL, foreign keys and a busy timeout. On a
    server, connections are pinged at checkout, so a store outlives a restart of its server."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        try:
            return create_engine(url, pool_pre_ping=True)
        except (NoSuchModuleError, ImportError) as exc:
            where = parsed.render_as_string(hide_password=True)
            if parsed.get_backend_name() == "postgresql":
                raise ValueError(f"db: {where!r} needs psycopg 3, which is not installed: {SCALE_INSTALL}") from None
            raise ValueError(f"db: cannot open {where!r}: no SQLAlchemy driver for {parsed.drivername!r} is "
                             f"installed ({exc})") from None
    database = parsed.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url)

    @event.listens_for(engine, "connect")
    def _set_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout=30000")
        # WAL is written into the file's header, once: only for a Lossboard store or an empty file, so that another
        # program's database, which `check_lossboard` refuses, is left exactly as it was. A store in WAL already
        # (every one after its first connection) is asked nothing more.
        if cursor.execute("PRAGMA journal_mode").fetchall()[0][0] != "wal":
            ours = cursor.execute("SELECT count(*) = 0 OR sum(name = 'alembic_version') > 0 FROM sqlite_master "
                                  "WHERE type = 'table'").fetchall()[0][0]
            if ours:
                cursor.execute("PRAGMA journal_mode=WAL").fetchall()
        for pragma in ("foreign_keys=ON", "synchronous=NORMAL"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    return engine


def alembic_config(url: str | None = None) -> Config:
    """Alembic's config, built in code (there is no alembic.ini). Pass a connection in `attributes["connection"]`."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if url:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


_MIGRATING = threading.Lock()


@functools.cache
def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


SHRINKING = ("0001",)  # revisions whose upgrade frees most of the file (0002: rows into chunks, about 7x smaller)


def _vacuum(engine: Engine) -> None:
    """Give the space an upgrade freed back to the file system (SQLite keeps freed pages in the file otherwise).
    Best effort: a database another process holds open just keeps its free pages, to be reused."""
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM")
    except DBAPIError:
        pass


MIGRATION_LOCK = 0x10551B0A  # the PostgreSQL advisory lock key of Lossboard's migrations (any fixed 64-bit number)


class NotThisStore(ValueError):
    """A database this Lossboard must not migrate: another program's, or a newer Lossboard's."""


def check_lossboard(engine: Engine, revision: str | None) -> None:
    """Refuse, before anything is written, a database at a schema revision this code does not know (a newer
    Lossboard wrote it) and one without Lossboard's schema that holds tables of its own (another program's: a
    command, even `runs`, would otherwise add Lossboard's tables to it)."""
    if revision is not None:
        known = {r.revision for r in ScriptDirectory.from_config(alembic_config()).walk_revisions()}
        if revision not in known:
            raise NotThisStore(f"was written by a newer Lossboard (schema {revision}; this one knows up to "
                               f"{head_revision()}): upgrade Lossboard, or name another database")
        return
    tables = sorted(inspect(engine).get_table_names())
    if tables:
        shown = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
        raise NotThisStore(f"is not a Lossboard store: it holds other tables ({shown}) and no Lossboard schema; "
                           "name a new file or an empty database")


def upgrade(engine: Engine, attempts: int = 3) -> None:
    """`alembic upgrade head`; a read-only no-op when already there. Safe when processes open a new DB at once:
    on SQLite the migration runs under `BEGIN IMMEDIATE`, on PostgreSQL under `pg_advisory_xact_lock` (the others
    wait, then find it done: Alembic reads the revision again inside the lock, and PostgreSQL's DDL is
    transactional); elsewhere a failure ("table already exists") is retried and ends well when another process
    got there first. Within a process, migrations run one at a time: Alembic's `context` is process-global, not
    thread-safe."""
    head = head_revision()
    for attempt in range(1, attempts + 1):
        try:
            start = _current_revision(engine)
            if start == head:
                return
            check_lossboard(engine, start)
            with _MIGRATING, engine.begin() as conn:
                if conn.dialect.name == "sqlite":
                    conn.exec_driver_sql("BEGIN IMMEDIATE")  # DDL runs inside this one write transaction
                elif conn.dialect.name == "postgresql":  # held until this transaction ends
                    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
                config = alembic_config()
                config.attributes["connection"] = conn
                command.upgrade(config, "head")
            if start in SHRINKING and engine.dialect.name == "sqlite":
                _vacuum(engine)
            return
        except DBAPIError:
            if attempt == attempts:
                raise
            time.sleep(0.2 * attempt)
