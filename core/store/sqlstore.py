"""`Store`: the one way into the run store, over any database SQLAlchemy reaches (SQLite by default).

Each public method is one short transaction of its own, and only plain frozen records (`Run`, `Study`, from
`core.store.records`) or numpy/pandas data leave it, never ORM rows. Opening a `Store` applies the migrations
(`core.store.database.upgrade`), so a database written by any version opens in every later one.

Storage conventions:
- timestamps: timezone-aware datetimes go in, stored as naive UTC, and come back as aware UTC datetimes;
- metric values: NaN is stored as NULL (SQLite cannot hold NaN) and read back as NaN; +-Inf are stored as is;
- config and summary: Python's json with NaN/Infinity allowed, so floats round trip exactly (this is not
  strict JSON: SQLite's json functions refuse it). Tuples come back as lists.
"""

from __future__ import annotations

import os
import unicodedata
import sqlite3
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import numpy as np
from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import selectinload, sessionmaker

from core.store.chunks import Points
from core.store.cursors import chunks, fetch, gc_paused, placeholder
from core.store.database import NotThisStore, database_url, default_url, make_engine, upgrade
from core.store.records import (INTERRUPTED_ERROR, STATUSES, Run, RunNotFound, Study, StudyNotFound,
                                check_status, db_reason, dumps_json, loads_json)
from core.store.many import ManyRuns
from core.store.metrics import KeyIds, Trace, compact_run, metric_names, read_traces, traces_frame
from core.store.schema import RunModel, StudyModel, TagModel
from core.training.reporting import MetricBatch, MetricRow

if TYPE_CHECKING:  # pandas loads (~0.3 s) only where a frame is made: training never needs it
    import pandas as pd


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


_RUNS = RunModel.__table__
# A running run beats at every flush (about once a second); one on this host whose pid is alive but that has not
# beaten for this long belongs to a process that died, its pid now another's (`mark_interrupted`)
REUSED_AFTER_S = 600.0



def _run_record(row: RunModel) -> Run:
    return Run(
        id=row.id, name=row.name, status=row.status, config=loads_json(row.config_json),
        summary=loads_json(row.summary_json), created_at=row.created_at, started_at=row.started_at,
        finished_at=row.finished_at, error=row.error, device=row.device, dtype=row.dtype,
        torch_version=row.torch_version, wall_time_s=row.wall_time_s, pid=row.pid, host=row.host,
        heartbeat_at=row.heartbeat_at, cancel_requested=row.cancel_requested, progress_step=row.progress_step,
        total_steps=row.total_steps, notes=row.notes, study_id=row.study_id,
        tags=tuple(sorted(t.tag for t in row.tags)),
    )


def _study_record(row: StudyModel) -> Study:
    return Study(id=row.id, name=row.name, spec=loads_json(row.spec_json), created_at=row.created_at)


MAX_TEXT = 255  # names and tags: VARCHAR(255) columns, which PostgreSQL enforces and SQLite does not


def text_problem(text: object) -> str | None:
    """Why `text` cannot be a name or a tag ("must not be empty", ...), or None. A control character (a newline,
    a tab, NUL) is refused: it breaks the lines of the command line's tables and of exported LaTeX and CSV."""
    if not isinstance(text, str) or not text.strip():
        return "must not be empty"
    if len(text.strip()) > MAX_TEXT:  # refused alike on every backend: a store SQLite took, PostgreSQL could not
        return f"must be at most {MAX_TEXT} characters (got {len(text.strip())})"
    bad = next((i for i, c in enumerate(text) if unicodedata.category(c) == "Cc"), None)
    if bad is not None:
        return f"must not contain control characters such as a newline or a tab (got {text[bad]!r} at {bad + 1})"
    return None


def _clean(text: str, what: str) -> str:
    problem = text_problem(text)
    if problem:
        raise ValueError(f"{what} {problem}")
    return text.strip()


class Store(ManyRuns):
    def __init__(self, url: str | None = None, *, env: Mapping[str, str] = os.environ,
                 clock: Callable[[], datetime] = utc_now) -> None:
        self.url = database_url(url) if url else default_url(env)
        self.engine = make_engine(self.url)
        self._clock = clock
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._keys = KeyIds()
        try:
            upgrade(self.engine)
        except NotThisStore as exc:  # another program's database, or a newer Lossboard's: nothing was written
            self.engine.dispose()
            raise ValueError(f"db: {self.where!r} {exc}") from None
        except (DBAPIError, sqlite3.Error, OSError) as exc:  # no server there, not a database, no such folder
            self.engine.dispose()
            raise ValueError(f"db: cannot open {self.where!r}: {db_reason(exc)}") from None

    @property
    def where(self) -> str:
        """The store's URL as messages show it (no password)."""
        return self.engine.url.render_as_string(hide_password=True)

    def __repr__(self) -> str:
        return f"Store({self.where!r})"

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def now(self) -> datetime:
        """The store's clock, in UTC: what it stamps rows with (leases compare heartbeats against it)."""
        return self._now()

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
        return self.create_runs([(name, config)], status=status, study_id=study_id)[0]

    def create_runs(self, runs: Sequence[tuple[str, Mapping[str, Any]]], *, status: str = "running",
                    study_id: int | None = None, pid: int | None = None, host: str | None = None) -> list[int]:
        """`create_run` for many (name, config) in one transaction, each attached to the process `pid` on `host`
        (`attach_process`) when given; returns their ids in order."""
        now = self._now()
        rows = [RunModel(name=_clean(name, "run name"), status=check_status(status), config_json=dumps_json(config),
                         created_at=now, study_id=study_id, pid=pid, host=host) for name, config in runs]
        with self._sessions.begin() as session:
            if study_id is not None and session.get(StudyModel, study_id) is None:
                raise StudyNotFound(study_id)
            session.add_all(rows)
            session.flush()
            return [row.id for row in rows]

    def start_run(self, run_id: int, *, device: str, dtype: str, torch_version: str, total_steps: int,
                  pid: int | None = None, host: str | None = None) -> None:
        """Marks the run started (status running). A pid or host left None keeps what `attach_process` set."""
        if self.start_runs([run_id], device=device, dtype=dtype, torch_version=torch_version,
                           total_steps=total_steps, pid=pid, host=host):
            raise RunNotFound(run_id)

    def attach_process(self, run_id: int, *, pid: int, host: str) -> None:
        """Record the process that will train the run, before it starts, so `mark_interrupted` can tell at once
        when it dies during start-up."""
        self._update_run(run_id, pid=pid, host=host)

    def log_metrics(self, run_id: int, rows: MetricBatch | Iterable[MetricRow], *,
                    progress_step: int | None = None) -> None:
        """The whole batch (one chunk per metric, `core.store.metrics.chunk_records`), the heartbeat and the
        progress in one transaction (`log_metrics_many` of one run): a reader sees all of a flush or none of it."""
        batch = rows if isinstance(rows, MetricBatch) else MetricBatch.from_rows(rows)
        if self.log_metrics_many([(run_id, batch, progress_step)]):
            raise RunNotFound(run_id)

    def finish_run(self, run_id: int, *, status: str, summary: Mapping[str, Any], error: str | None = None,
                   wall_time_s: float | None = None) -> None:
        """The run's end (`finish_runs` of one run: its chunks compacted where that pays)."""
        if self.finish_runs([(run_id, status, summary, error, wall_time_s)]):
            raise RunNotFound(run_id)

    def compact(self, run_id: int, *, when_it_pays: bool = False) -> int:
        """Merge a run's metric chunks (one per flush) into a few large ones, in one transaction
        (`core.store.metrics.compact_run`); returns how many chunks went. Every metric, or with `when_it_pays` (as
        `finish_run` does) those with many or big chunks."""
        with self.engine.begin() as conn:
            return compact_run(conn, run_id, when_it_pays=when_it_pays)

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

    def cancel_requests(self, study_id: int, *, status: str | None = None) -> set[int]:
        """The ids of the study's runs (of `status`, if given) whose cancel flag is set: one narrow query, for
        a scheduler that polls it a few times a second (loading every run of a big study was most of a poll)."""
        stmt = select(RunModel.id).where(RunModel.study_id == study_id, RunModel.cancel_requested.is_(True))
        if status is not None:
            stmt = stmt.where(RunModel.status == check_status(status))
        with self._sessions() as session:
            return set(session.scalars(stmt))

    def mark_interrupted(self, *, host: str, pid_alive: Callable[[int], bool],
                         stale_after_s: float = 60.0, reused_after_s: float = REUSED_AFTER_S) -> list[int]:
        """Running runs whose process is gone become "interrupted". A run with a pid on `host` is judged by its
        pid, and by its heartbeat (or start, or creation) being older than `reused_after_s` (its pid is alive, but
        it is another process's: a reboot or a container's restart hands pids out again); any other run by its
        heartbeat being older than `stale_after_s`."""
        now = self._now()
        marked: list[int] = []
        with self._sessions.begin() as session:
            running = session.scalars(select(RunModel).where(RunModel.status == "running").order_by(RunModel.id))
            for run in running.all():
                last = run.heartbeat_at or run.started_at or run.created_at
                silent = (now - last).total_seconds()
                if run.pid is not None and run.host == host:
                    stopped = silent > reused_after_s or not pid_alive(run.pid)
                else:
                    stopped = silent > stale_after_s
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

    def get_runs(self, run_ids: Sequence[int]) -> list[Run]:
        """The runs of `run_ids` that exist, in the order asked (one query per `cursors.CHUNK` ids, tags included)."""
        ids = list(dict.fromkeys(int(i) for i in run_ids))
        found: dict[int, Run] = {}
        with self._sessions() as session:
            for part in chunks(ids):
                stmt = select(RunModel).options(selectinload(RunModel.tags)).where(RunModel.id.in_(part))
                found.update((row.id, _run_record(row)) for row in session.scalars(stmt))
        return [found[i] for i in ids if i in found]

    def list_runs(self, *, status: str | Sequence[str] | None = None, study_id: int | None = None,
                  limit: int | None = None) -> list[Run]:
        """Newest first; tags come in one extra query (selectinload), however many runs."""
        stmt = (select(RunModel).options(selectinload(RunModel.tags))
                .order_by(RunModel.created_at.desc(), RunModel.id.desc()))
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            stmt = stmt.where(RunModel.status.in_([check_status(s) for s in statuses]))
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
        with self.engine.connect() as conn:
            self._check_run(conn, run_id)
            return metric_names(conn, [run_id])

    def metric_keys_for(self, run_ids: Sequence[int]) -> list[str]:
        """Every metric key any of these runs has, sorted; one query per 500 runs. Unknown ids add nothing."""
        with self.engine.connect() as conn:
            return metric_names(conn, [int(i) for i in run_ids])

    def traces(self, run_ids: Sequence[int], keys: Sequence[str] | None = None, *,
               x_range: tuple[float, float] | None = None, max_points: int | None = None,
               fields: Sequence[str] = ("epoch", "wall_time")) -> list[Trace]:
        """The series of these runs and metrics as numpy arrays (`core.store.metrics.read_traces`): whole, or
        within `x_range` (steps, inclusive), or sized to a chart with `max_points`. Unknown ids and keys add
        nothing."""
        with self.engine.connect() as conn, gc_paused():
            return read_traces(conn, run_ids, keys, x_range=x_range, max_points=max_points, fields=fields)

    def metrics_frame(self, run_ids: Sequence[int], keys: Sequence[str] | None = None, *,
                      x_range: tuple[float, float] | None = None, max_points: int | None = None) -> pd.DataFrame:
        """Columns run_id, key, step, epoch, value (NaN, +-Inf and -0.0 as logged), wall_time; sorted by run_id,
        key, step. Every stored value unless `x_range` or `max_points` (see `traces`) say otherwise."""
        return traces_frame(self.traces(run_ids, keys, x_range=x_range, max_points=max_points))

    def series(self, run_id: int, key: str) -> dict[str, np.ndarray]:
        """One trace as arrays step, epoch, value, wall_time, sorted by step; empty arrays for a key the run never
        logged."""
        with self.engine.connect() as conn:
            self._check_run(conn, run_id)
            found = read_traces(conn, [run_id], [key])
        points = found[0].points if found else Points.empty()
        return {"step": points.step, "epoch": points.epoch, "value": points.value, "wall_time": points.wall_time}

    def _check_run(self, conn: Connection, run_id: int) -> None:
        if not fetch(conn, f"SELECT 1 FROM runs WHERE id = {placeholder(conn)}", (run_id,)):
            raise RunNotFound(run_id)

    # --- studies

    def create_study(self, name: str, spec: Mapping[str, Any]) -> int:
        row = StudyModel(name=_clean(name, "study name"), spec_json=dumps_json(spec), created_at=self._now())
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
