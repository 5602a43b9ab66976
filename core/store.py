"""The run store: every run, its metrics and its tags, kept in SQLite (or any database SQLAlchemy reaches).

`Store` is the only way in. Each public method is one short transaction of its own, and only plain frozen
records (`Run`, `Study`) or numpy/pandas data leave it, never ORM rows. The schema is owned by the Alembic
migrations in `core/migrations`, applied when a `Store` opens, so a database written by any version opens in
every later one. `StoreReporter` is the trainer's `Reporter` that writes into a store.

Storage conventions:
- timestamps: timezone-aware datetimes go in, stored as naive UTC, and come back as aware UTC datetimes;
- metric values: NaN is stored as NULL (SQLite cannot hold NaN) and read back as NaN; +-Inf are stored as is;
- config and summary: Python's json with NaN/Infinity allowed, so floats round trip exactly (this is not
  strict JSON: SQLite's json functions refuse it). Tuples come back as lists.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import repeat
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (CheckConstraint, DateTime, Dialect, Double, Engine, ForeignKey, Index, Integer, MetaData,
                        String, Text, TypeDecorator, bindparam, create_engine, delete, event, false, func, insert,
                        make_url, select, text, update)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, selectinload, sessionmaker

from core import PROJECT_ROOT
from core.reporting import MetricBatch, MetricRow, RunInfo, RunResult

STATUSES: tuple[str, ...] = ("running", "finished", "diverged", "failed", "cancelled", "interrupted")
FINAL_STATUSES: tuple[str, ...] = STATUSES[1:]
INTERRUPTED_ERROR = "the training process stopped without finishing (killed or crashed)"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_CHUNK = 500  # ids per IN (...) list


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class RunNotFound(KeyError):
    def __init__(self, run_id: int) -> None:
        super().__init__(f"no run with id {run_id}")
        self.run_id = run_id

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class StudyNotFound(KeyError):
    def __init__(self, study_id: int) -> None:
        super().__init__(f"no study with id {study_id}")
        self.study_id = study_id

    def __str__(self) -> str:
        return str(self.args[0])


# --------------------------------------------------------------------------------------------- connection


def default_url(env: Mapping[str, str] = os.environ, root: Path = PROJECT_ROOT) -> str:
    """`LOSSBOARD_DB` (a SQLAlchemy URL, or a bare file path) if set, else `experiments.db` in the project."""
    value = env.get("LOSSBOARD_DB", "").strip()
    if not value:
        return f"sqlite:///{root}/experiments.db"
    if "://" in value:
        return value
    return f"sqlite:///{Path(value).expanduser().absolute()}"


def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite files get their folder created and WAL, foreign keys and a busy timeout."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url)
    database = parsed.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url)

    @event.listens_for(engine, "connect")
    def _set_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        for pragma in ("busy_timeout=30000", "journal_mode=WAL", "foreign_keys=ON", "synchronous=NORMAL"):
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


def upgrade(engine: Engine, attempts: int = 3) -> None:
    """`alembic upgrade head`; a read-only no-op when already there. Safe when processes open a new DB at once:
    on SQLite the migration runs under `BEGIN IMMEDIATE` (the others wait, then find it done); elsewhere a
    failure ("table already exists") is retried and ends well when another process got there first. Within a
    process, migrations run one at a time: Alembic's `context` is process-global, not thread-safe."""
    head = head_revision()
    for attempt in range(1, attempts + 1):
        try:
            if _current_revision(engine) == head:
                return
            with _MIGRATING, engine.begin() as conn:
                if conn.dialect.name == "sqlite":
                    conn.exec_driver_sql("BEGIN IMMEDIATE")  # DDL runs inside this one write transaction
                config = alembic_config()
                config.attributes["connection"] = conn
                command.upgrade(config, "head")
            return
        except DBAPIError:
            if attempt == attempts:
                raise
            time.sleep(0.2 * attempt)


# --------------------------------------------------------------------------------------------- schema


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out; stored as naive UTC so every backend sorts them alike."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: the store needs timezone-aware datetimes")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=timezone.utc)


NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), float: Double()}  # Double: 64-bit on every backend


class StudyModel(Base):
    __tablename__ = "studies"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    spec_json: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]


class TagModel(Base):
    __tablename__ = "tags"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(255), primary_key=True)


class RunModel(Base):
    __tablename__ = "runs"
    __table_args__ = (
        CheckConstraint("status IN ({})".format(", ".join(f"'{s}'" for s in STATUSES)), name="status"),
        {"sqlite_autoincrement": True},  # ids of deleted runs are never handed out again
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))
    config_json: Mapped[str] = mapped_column(Text)
    summary_json: Mapped[str] = mapped_column(Text, default="{}", server_default="{}")
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    device: Mapped[str | None] = mapped_column(String(64))
    dtype: Mapped[str | None] = mapped_column(String(32))
    torch_version: Mapped[str | None] = mapped_column(String(64))
    wall_time_s: Mapped[float | None]
    pid: Mapped[int | None]
    host: Mapped[str | None] = mapped_column(String(255))
    heartbeat_at: Mapped[datetime | None]
    cancel_requested: Mapped[bool] = mapped_column(default=False, server_default=false())
    progress_step: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    total_steps: Mapped[int | None]
    notes: Mapped[str] = mapped_column(Text, default="", server_default="")
    study_id: Mapped[int | None] = mapped_column(ForeignKey("studies.id", ondelete="SET NULL"), index=True)

    # lazy="raise": tags are always loaded with selectinload, so listing runs can never become N+1 queries
    tags: Mapped[list[TagModel]] = relationship(order_by=TagModel.tag, viewonly=True, lazy="raise")


class MetricModel(Base):
    __tablename__ = "metrics"
    __table_args__ = (Index("ix_metrics_run_key_step", "run_id", "key", "step"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(255))
    step: Mapped[int]
    epoch: Mapped[int]
    value: Mapped[float | None]  # NULL means NaN
    wall_time: Mapped[float]


_RUNS = RunModel.__table__
_METRICS = MetricModel.__table__
_METRIC_COLUMNS = ("run_id", "key", "step", "epoch", "value", "wall_time")
_HEARTBEAT = (  # built once: log_metrics runs it with every batch
    update(_RUNS).where(_RUNS.c.id == bindparam("b_run_id"))
    .values(heartbeat_at=bindparam("b_now", type_=UTCDateTime()),
            progress_step=func.coalesce(bindparam("b_step", type_=Integer()), _RUNS.c.progress_step)))


# --------------------------------------------------------------------------------------------- records


@dataclass(frozen=True, kw_only=True)
class Run:
    id: int
    name: str
    status: str
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    device: str | None = None
    dtype: str | None = None
    torch_version: str | None = None
    wall_time_s: float | None = None
    pid: int | None = None
    host: str | None = None
    heartbeat_at: datetime | None = None
    cancel_requested: bool = False
    progress_step: int = 0
    total_steps: int | None = None
    notes: str = ""
    study_id: int | None = None
    tags: tuple[str, ...] = ()

    @property
    def duration_s(self) -> float | None:
        if self.wall_time_s is not None:
            return self.wall_time_s
        end = self.finished_at or self.heartbeat_at
        if self.started_at is None or end is None:
            return None
        return (end - self.started_at).total_seconds()


@dataclass(frozen=True, kw_only=True)
class Study:
    id: int
    name: str
    spec: dict[str, Any] = field(default_factory=dict)
    created_at: datetime


def _json_default(obj: Any) -> Any:
    if callable(getattr(obj, "item", None)):  # numpy scalars and 0-d tensors
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def _dumps(obj: Mapping[str, Any]) -> str:
    return json.dumps(obj, allow_nan=True, default=_json_default)


def _loads(text: str | None) -> dict[str, Any]:
    return json.loads(text) if text else {}


def _run_record(row: RunModel) -> Run:
    return Run(
        id=row.id, name=row.name, status=row.status, config=_loads(row.config_json),
        summary=_loads(row.summary_json), created_at=row.created_at, started_at=row.started_at,
        finished_at=row.finished_at, error=row.error, device=row.device, dtype=row.dtype,
        torch_version=row.torch_version, wall_time_s=row.wall_time_s, pid=row.pid, host=row.host,
        heartbeat_at=row.heartbeat_at, cancel_requested=row.cancel_requested, progress_step=row.progress_step,
        total_steps=row.total_steps, notes=row.notes, study_id=row.study_id,
        tags=tuple(sorted(t.tag for t in row.tags)),
    )


def _study_record(row: StudyModel) -> Study:
    return Study(id=row.id, name=row.name, spec=_loads(row.spec_json), created_at=row.created_at)


def _check_status(status: str, allowed: Sequence[str] = STATUSES) -> str:
    if status not in allowed:
        raise ValueError(f"status {status!r} is not one of {', '.join(allowed)}")
    return status


def _clean(text: str, what: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{what} must not be empty")
    return text.strip()


def _chunks(ids: Sequence[int]) -> Iterator[Sequence[int]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start:start + _CHUNK]


# --------------------------------------------------------------------------------------------- the store


class Store:
    def __init__(self, url: str | None = None, *, env: Mapping[str, str] = os.environ,
                 clock: Callable[[], datetime] = utc_now) -> None:
        self.url = url or default_url(env)
        self.engine = make_engine(self.url)
        self._clock = clock
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._insert_metrics = insert(_METRICS).compile(dialect=self.engine.dialect, column_keys=list(_METRIC_COLUMNS))
        if self._insert_metrics.positional and tuple(self._insert_metrics.positiontup or ()) != _METRIC_COLUMNS:
            raise RuntimeError(f"unexpected parameter order {self._insert_metrics.positiontup}")
        upgrade(self.engine)

    def __repr__(self) -> str:
        return f"Store({self.engine.url.render_as_string(hide_password=True)!r})"

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _now(self) -> datetime:
        now = self._clock()
        if now.utcoffset() is None:
            raise ValueError(f"the store's clock returned a naive datetime {now!r}; it must be timezone-aware")
        return now.astimezone(timezone.utc)

    def _update_run(self, run_id: int, **values: Any) -> None:
        with self.engine.begin() as conn:
            if conn.execute(update(_RUNS).where(_RUNS.c.id == run_id).values(**values)).rowcount == 0:
                raise RunNotFound(run_id)

    # --- the run's life, as the trainer sees it

    def create_run(self, *, name: str, config: Mapping[str, Any], status: str = "running",
                   study_id: int | None = None) -> int:
        row = RunModel(name=_clean(name, "run name"), status=_check_status(status), config_json=_dumps(config),
                       created_at=self._now(), study_id=study_id)
        with self._sessions.begin() as session:
            if study_id is not None and session.get(StudyModel, study_id) is None:
                raise StudyNotFound(study_id)
            session.add(row)
            session.flush()
            return row.id

    def start_run(self, run_id: int, *, device: str, dtype: str, torch_version: str, total_steps: int,
                  pid: int | None = None, host: str | None = None) -> None:
        """Marks the run started (status running). A pid or host left None keeps what `attach_process` set."""
        now = self._now()
        process = {name: value for name, value in (("pid", pid), ("host", host)) if value is not None}
        self._update_run(run_id, status="running", started_at=now, heartbeat_at=now, device=device, dtype=dtype,
                         torch_version=torch_version, total_steps=total_steps, **process)

    def attach_process(self, run_id: int, *, pid: int, host: str) -> None:
        """Record the process that will train the run, before it starts, so `mark_interrupted` can tell at once
        when it dies during start-up."""
        self._update_run(run_id, pid=pid, host=host)

    def log_metrics(self, run_id: int, rows: MetricBatch | Iterable[MetricRow], *,
                    progress_step: int | None = None) -> None:
        """The whole batch, the heartbeat and the progress in one transaction: one executemany of the Core
        `insert(metrics)` compiled once per store. Executing the compiled SQL directly skips SQLAlchemy's
        per-row parameter processing, which alone costs twice the insert itself (none of these columns needs
        processing); this keeps ingest close to raw sqlite3. NaN is stored as NULL."""
        batch = rows if isinstance(rows, MetricBatch) else MetricBatch.from_rows(rows)
        batch.check()
        values = [None if v != v else v for v in batch.values]
        params: list[Any] = list(zip(repeat(run_id), batch.keys, batch.steps, batch.epochs, values,
                                     batch.wall_times))
        if not self._insert_metrics.positional:
            params = [dict(zip(_METRIC_COLUMNS, p)) for p in params]
        with self.engine.begin() as conn:
            beat = {"b_run_id": run_id, "b_now": self._now(), "b_step": progress_step}
            if conn.execute(_HEARTBEAT, beat).rowcount == 0:
                raise RunNotFound(run_id)
            if params:
                conn.exec_driver_sql(self._insert_metrics.string, params)

    def finish_run(self, run_id: int, *, status: str, summary: Mapping[str, Any], error: str | None = None,
                   wall_time_s: float | None = None) -> None:
        self._update_run(run_id, status=_check_status(status, FINAL_STATUSES), summary_json=_dumps(summary),
                         error=error, wall_time_s=wall_time_s, finished_at=self._now())

    def heartbeat(self, run_id: int) -> None:
        self._update_run(run_id, heartbeat_at=self._now())

    def request_cancel(self, run_id: int) -> None:
        self._update_run(run_id, cancel_requested=True)

    def is_cancel_requested(self, run_id: int) -> bool:
        with self._sessions() as session:
            flag = session.scalar(select(RunModel.cancel_requested).where(RunModel.id == run_id))
        if flag is None:
            raise RunNotFound(run_id)
        return flag

    def mark_interrupted(self, *, host: str, pid_alive: Callable[[int], bool],
                         stale_after_s: float = 60.0) -> list[int]:
        """Running runs whose process is gone become "interrupted". A run with a pid on `host` is judged by its
        pid; any other by its heartbeat (or start, or creation) being older than `stale_after_s`."""
        now = self._now()
        marked: list[int] = []
        with self._sessions.begin() as session:
            running = session.scalars(select(RunModel).where(RunModel.status == "running").order_by(RunModel.id))
            for run in running.all():
                if run.pid is not None and run.host == host:
                    stopped = not pid_alive(run.pid)
                else:
                    last = run.heartbeat_at or run.started_at or run.created_at
                    stopped = (now - last).total_seconds() > stale_after_s
                if not stopped:
                    continue
                lived = None  # started to last heartbeat: how long it ran, not how long until we noticed
                if run.heartbeat_at and run.started_at:
                    lived = (run.heartbeat_at - run.started_at).total_seconds()
                # compare-and-set: a run that finished or beat its heart meanwhile is left alone
                result = session.execute(
                    update(_RUNS)
                    .where(_RUNS.c.id == run.id, _RUNS.c.status == "running",
                           _RUNS.c.heartbeat_at.is_not_distinct_from(run.heartbeat_at))
                    .values(status="interrupted", finished_at=now, error=INTERRUPTED_ERROR,
                            wall_time_s=func.coalesce(_RUNS.c.wall_time_s, lived)))
                if result.rowcount:
                    marked.append(run.id)
        return marked

    # --- reading runs

    def get_run(self, run_id: int) -> Run:
        with self._sessions() as session:
            row = session.get(RunModel, run_id, options=[selectinload(RunModel.tags)])
            if row is None:
                raise RunNotFound(run_id)
            return _run_record(row)

    def list_runs(self, *, status: str | Sequence[str] | None = None, study_id: int | None = None,
                  limit: int | None = None) -> list[Run]:
        """Newest first; tags come in one extra query (selectinload), however many runs."""
        stmt = (select(RunModel).options(selectinload(RunModel.tags))
                .order_by(RunModel.created_at.desc(), RunModel.id.desc()))
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            stmt = stmt.where(RunModel.status.in_([_check_status(s) for s in statuses]))
        if study_id is not None:
            stmt = stmt.where(RunModel.study_id == study_id)
        if limit is not None:
            stmt = stmt.limit(limit)
        with self._sessions() as session:
            return [_run_record(row) for row in session.scalars(stmt)]

    def counts(self) -> dict[str, int]:
        """Runs per status, every status present (0 when none), in STATUSES order."""
        with self._sessions() as session:
            found = dict(session.execute(select(RunModel.status, func.count()).group_by(RunModel.status)).all())
        return {status: found.get(status, 0) for status in STATUSES}

    # --- editing runs

    def rename_run(self, run_id: int, name: str) -> None:
        self._update_run(run_id, name=_clean(name, "run name"))

    def set_notes(self, run_id: int, text: str) -> None:
        self._update_run(run_id, notes=text)

    def add_tag(self, run_id: int, tag: str) -> None:
        self._edit_tags(run_id, add=[tag])

    def remove_tag(self, run_id: int, tag: str) -> None:
        self._edit_tags(run_id, remove=[tag])

    def set_tags(self, run_id: int, tags: Sequence[str]) -> None:
        self._edit_tags(run_id, add=tags, replace=True)

    def _edit_tags(self, run_id: int, *, add: Sequence[str] = (), remove: Sequence[str] = (),
                   replace: bool = False) -> None:
        wanted = {_clean(tag, "tag") for tag in add}
        with self._sessions.begin() as session:
            if session.get(RunModel, run_id) is None:
                raise RunNotFound(run_id)
            have = set(session.scalars(select(TagModel.tag).where(TagModel.run_id == run_id)))
            drop = (have - wanted) if replace else (have & {tag.strip() for tag in remove})
            if drop:
                session.execute(delete(TagModel).where(TagModel.run_id == run_id, TagModel.tag.in_(drop)))
            session.add_all(TagModel(run_id=run_id, tag=tag) for tag in sorted(wanted - have))

    def delete_run(self, run_id: int) -> None:
        """Deletes the run; the database cascades to its metrics and tags."""
        with self.engine.begin() as conn:
            if conn.execute(delete(_RUNS).where(_RUNS.c.id == run_id)).rowcount == 0:
                raise RunNotFound(run_id)

    # --- reading metrics

    def metric_keys(self, run_id: int) -> list[str]:
        with self._sessions() as session:
            if session.get(RunModel, run_id) is None:
                raise RunNotFound(run_id)
            return list(session.scalars(select(MetricModel.key).where(MetricModel.run_id == run_id)
                                        .distinct().order_by(MetricModel.key)))

    def metric_keys_for(self, run_ids: Sequence[int]) -> list[str]:
        """Every metric key any of these runs has, sorted; one query per 500 runs. Unknown ids add nothing."""
        ids = sorted({int(i) for i in run_ids})
        keys: set[str] = set()
        with self._sessions() as session:
            for part in _chunks(ids):
                keys.update(session.scalars(select(MetricModel.key).where(MetricModel.run_id.in_(part)).distinct()))
        return sorted(keys)

    def metrics_frame(self, run_ids: Sequence[int], keys: Sequence[str] | None = None) -> pd.DataFrame:
        """Columns run_id, key, step, epoch, value (NaN where NULL), wall_time; sorted by run_id, key, step.
        Unknown run ids and keys simply contribute no rows.

        Fast path: one indexed query per (run, key) reading only the numeric columns through the DBAPI cursor
        (no key string per row, no SQLAlchemy row objects); run_id and key are repeated per trace with numpy."""
        ids = sorted({int(i) for i in run_ids})
        traces: list[tuple[int, str, int]] = []  # (run_id, key, number of rows)
        rows: list[tuple[Any, ...]] = []
        with self.engine.connect() as conn, _gc_paused():
            mark, key = _placeholder(conn), conn.dialect.identifier_preparer.quote("key")
            if keys is None:
                pairs = [pair for part in _chunks(ids) for pair in _fetch(
                    conn, f"SELECT DISTINCT run_id, {key} FROM metrics"
                          f" WHERE run_id IN ({', '.join([mark] * len(part))}) ORDER BY run_id, {key}", tuple(part))]
            else:
                pairs = [(run_id, k) for run_id in ids for k in sorted(set(keys))]
            sql = (f"SELECT step, epoch, value, wall_time FROM metrics WHERE run_id = {mark} AND {key} = {mark}"
                   f" ORDER BY step, id")
            for run_id, k in pairs:
                got = _fetch(conn, sql, (run_id, k))
                if got:
                    traces.append((run_id, k, len(got)))
                    rows.extend(got)
            step, epoch, value, wall_time = zip(*rows) if rows else ((),) * 4
            del rows
        lengths = np.array([n for _, _, n in traces], dtype=np.int64)
        return pd.DataFrame({
            "run_id": np.repeat(np.array([r for r, _, _ in traces], dtype=np.int64), lengths),
            "key": pd.array(np.repeat(np.array([k for _, k, _ in traces], dtype=object), lengths), dtype="str"),
            "step": np.array(step, dtype=np.int64),
            "epoch": np.array(epoch, dtype=np.int64),
            "value": np.array(value, dtype=np.float64),  # None (NULL) becomes NaN
            "wall_time": np.array(wall_time, dtype=np.float64),
        })

    def series(self, run_id: int, key: str) -> dict[str, np.ndarray]:
        """One trace as arrays step, epoch, value (NaN where NULL), wall_time, sorted by step; empty arrays for a
        key the run never logged."""
        with self.engine.connect() as conn:
            mark, quoted = _placeholder(conn), conn.dialect.identifier_preparer.quote("key")
            if not _fetch(conn, f"SELECT 1 FROM runs WHERE id = {mark}", (run_id,)):
                raise RunNotFound(run_id)
            rows = _fetch(conn, f"SELECT step, epoch, value, wall_time FROM metrics WHERE run_id = {mark}"
                                f" AND {quoted} = {mark} ORDER BY step, id", (run_id, key))
        step, epoch, value, wall_time = zip(*rows) if rows else ((),) * 4
        return {"step": np.array(step, dtype=np.int64), "epoch": np.array(epoch, dtype=np.int64),
                "value": np.array(value, dtype=np.float64), "wall_time": np.array(wall_time, dtype=np.float64)}

    # --- studies

    def create_study(self, name: str, spec: Mapping[str, Any]) -> int:
        row = StudyModel(name=_clean(name, "study name"), spec_json=_dumps(spec), created_at=self._now())
        try:
            with self._sessions.begin() as session:
                session.add(row)
                session.flush()
                return row.id
        except IntegrityError as exc:
            raise ValueError(f"a study named {row.name!r} already exists") from exc

    def get_study(self, study_id: int) -> Study:
        with self._sessions() as session:
            row = session.get(StudyModel, study_id)
            if row is None:
                raise StudyNotFound(study_id)
            return _study_record(row)

    def get_study_by_name(self, name: str) -> Study | None:
        with self._sessions() as session:
            row = session.scalar(select(StudyModel).where(StudyModel.name == name.strip()))
            return None if row is None else _study_record(row)

    def list_studies(self) -> list[Study]:
        """Newest first."""
        with self._sessions() as session:
            stmt = select(StudyModel).order_by(StudyModel.created_at.desc(), StudyModel.id.desc())
            return [_study_record(row) for row in session.scalars(stmt)]


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Millions of fresh row tuples would trigger the cyclic GC over and over (half the time of a big read)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _placeholder(conn: Connection) -> str:
    return "?" if conn.dialect.paramstyle == "qmark" else "%s"  # qmark: sqlite3; format/pyformat: the others


def _fetch(conn: Connection, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """Plain tuples straight from the DBAPI cursor: no per-row SQLAlchemy objects on the hot read paths."""
    cursor = conn.connection.cursor()
    try:
        cursor.execute(sql, params)
        return cursor.fetchall()
    finally:
        cursor.close()


# --------------------------------------------------------------------------------------------- the reporter


class StoreReporter:
    """The trainer's Reporter, writing into a store. Every call is one commit, so a killed trainer keeps every
    batch it handed over. A run deleted while it trains stops it: `should_stop` turns True and later writes
    are dropped instead of failing the trainer."""

    def __init__(self, store: Store, run_id: int, *, pid: int | None = None, host: str | None = None) -> None:
        self.store = store
        self.run_id = run_id
        self.pid = pid
        self.host = host
        self.deleted = False

    def on_start(self, info: RunInfo) -> None:
        self.store.start_run(self.run_id, device=info.device, dtype=info.dtype, torch_version=info.torch_version,
                             total_steps=info.total_steps, pid=self.pid, host=self.host)

    def on_metrics(self, batch: MetricBatch, *, step: int) -> None:
        if self.deleted:
            return
        try:
            self.store.log_metrics(self.run_id, batch, progress_step=step)
        except RunNotFound:
            self.deleted = True

    def should_stop(self) -> bool:
        if self.deleted:
            return True
        try:
            return self.store.is_cancel_requested(self.run_id)
        except RunNotFound:
            self.deleted = True
            return True

    def on_finish(self, result: RunResult) -> None:
        if self.deleted:
            return
        try:
            self.store.finish_run(self.run_id, status=result.status, summary=result.summary, error=result.error,
                                  wall_time_s=result.wall_time_s)
        except RunNotFound:
            self.deleted = True


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie. Never signals it (signal 0 only probes)."""
    if pid <= 0:
        return False
    if sys.platform == "win32":  # os.kill(pid, 0) would terminate the process on Windows
        return _windows_pid_alive(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:  # Linux: it exited just now; no /proc at all (macOS): trust os.kill
        return not Path("/proc/self").exists()
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def _windows_pid_alive(pid: int) -> bool:
    import ctypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return ctypes.get_last_error() == 5  # ERROR_ACCESS_DENIED: it exists
    try:
        code = ctypes.c_ulong()
        return bool(kernel32.GetExitCodeProcess(handle, ctypes.byref(code))) and code.value == 259  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)
