"""A `Store`'s operations on many runs at once: what a population's members do together (start, hand over a
flush's rows, poll their cancel flags, finish), each one transaction or query where a run at a time would be one
each, a round trip or more each on a server. `Store` has them (`class Store(ManyRuns)`); the reporters that use
them are `StoreReporter`'s `*_many` class methods."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

from sqlalchemy import Integer, bindparam, func, select, update
from sqlalchemy.exc import SQLAlchemyError

from core.store.cursors import chunks
from core.store.metrics import KeyIds, chunk_records, insert_chunks, runs_to_compact
from core.store.records import FINAL_STATUSES, check_status, dumps_json
from core.store.schema import RunModel, UTCDateTime

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from core.training.reporting import MetricBatch

_RUNS = RunModel.__table__
_BEAT = (update(_RUNS).where(_RUNS.c.id.in_(bindparam("b_ids", expanding=True)))  # built once: every flush runs it
         .values(heartbeat_at=bindparam("b_now", type_=UTCDateTime()),
                 progress_step=func.coalesce(bindparam("b_step", type_=Integer()), _RUNS.c.progress_step))
         .returning(_RUNS.c.id))
_FINISH = (update(_RUNS).where(_RUNS.c.id == bindparam("b_id"))
           .values(status=bindparam("b_status"), summary_json=bindparam("b_summary"), error=bindparam("b_error"),
                   wall_time_s=bindparam("b_wall"), finished_at=bindparam("b_now", type_=UTCDateTime())))


class ManyRuns:
    """Mixed into `Store`, whose engine, metric-key cache, clock and `compact` it uses."""

    engine: Engine
    _keys: KeyIds
    _now: Callable[[], datetime]
    compact: Callable[..., int]

    def _existing(self, conn: Any, run_ids: list[int], **values: Any) -> set[int]:
        """Set `values` on the runs `run_ids` that exist (an UPDATE … RETURNING a chunk of ids, which keeps their
        rows locked until the commit); returns those."""
        found: set[int] = set()
        for part in chunks(list(dict.fromkeys(run_ids))):
            found.update(conn.execute(update(_RUNS).where(_RUNS.c.id.in_(part)).values(**values)
                                      .returning(_RUNS.c.id)).scalars())
        return found

    def start_runs(self, run_ids: Sequence[int], *, device: str, dtype: str, torch_version: str, total_steps: int,
                   pid: int | None = None, host: str | None = None) -> set[int]:
        """`start_run` of many runs that start together, in one transaction; returns the ids of the runs that
        do not exist (the others are started)."""
        now = self._now()
        process = {name: value for name, value in (("pid", pid), ("host", host)) if value is not None}
        with self.engine.begin() as conn:
            found = self._existing(conn, list(run_ids), status="running", started_at=now, heartbeat_at=now,
                                   device=device, dtype=dtype, torch_version=torch_version, total_steps=total_steps,
                                   **process)
        return set(run_ids) - found

    def log_metrics_many(self, items: Sequence[tuple[int, MetricBatch, int | None]]) -> set[int]:
        """`log_metrics` of many runs, (run id, batch, progress step) each, in one transaction: one heartbeat
        UPDATE a distinct progress step and one INSERT of every chunk. Returns the ids of the runs that do not
        exist (their batches are dropped; the others are written)."""
        now = self._now()
        by_step: dict[int | None, list[int]] = {}
        for run_id, _, step in items:
            by_step.setdefault(step, []).append(run_id)
        found: set[int] = set()
        with self.engine.begin() as conn:
            for step, ids in by_step.items():  # a run's row stays locked until the commit
                for part in chunks(list(dict.fromkeys(ids))):
                    found.update(conn.execute(_BEAT, {"b_ids": part, "b_now": now, "b_step": step}).scalars())
            shared: dict[tuple[str, bytes], bytes] = {}  # the members' steps, epochs and times: encoded once
            insert_chunks(conn, [row for run_id, batch, _ in items if run_id in found
                                 for row in chunk_records(conn, run_id, batch, self._keys, shared)])
        return {run_id for run_id, _, _ in items if run_id not in found}

    def cancel_flags(self, run_ids: Iterable[int]) -> dict[int, bool]:
        """Each run's cancel flag, in one query (a chunk of ids at a time); a run that does not exist is left out."""
        ids = list(dict.fromkeys(int(i) for i in run_ids))
        out: dict[int, bool] = {}
        with self.engine.connect() as conn:
            for part in chunks(ids):
                rows = conn.execute(select(_RUNS.c.id, _RUNS.c.cancel_requested).where(_RUNS.c.id.in_(part)))
                out.update((run_id, bool(flag)) for run_id, flag in rows)
        return out

    def finish_runs(self, items: Sequence[tuple[int, str, Mapping[str, Any], str | None, float | None]]) -> set[int]:
        """`finish_run` of many runs, (run id, status, summary, error, wall time) each: their ends in one
        transaction, then the compaction of those whose chunks it pays to merge (found in one query). Returns the
        ids of the runs that do not exist."""
        now = self._now()
        rows = [{"b_id": run_id, "b_status": check_status(status, FINAL_STATUSES), "b_summary": dumps_json(summary),
                 "b_error": error, "b_wall": wall, "b_now": now} for run_id, status, summary, error, wall in items]
        with self.engine.begin() as conn:
            found: set[int] = set()
            for part in chunks([row["b_id"] for row in rows]):
                found.update(conn.execute(select(_RUNS.c.id).where(_RUNS.c.id.in_(part))).scalars())
            if found:
                conn.execute(_FINISH, [row for row in rows if row["b_id"] in found])
        try:
            with self.engine.connect() as conn:
                todo = runs_to_compact(conn, sorted(found))
            for run_id in todo:
                self.compact(run_id, when_it_pays=True)
        except SQLAlchemyError:  # only slower reads: the runs' chunks stay as they were, every value in them
            pass
        return {row["b_id"] for row in rows} - found
