"""Study cells claimed through the store: each (variant, seed) of a study is trained exactly once, whichever
machines, executors and schedulers take part.

A study's cells are rows of `study_cells` (migration 0003), written once by whoever first runs the study on a
pool of workers (`publish`): the run to create (name, config) and its lease. A worker `claim`s one cell in one
short write transaction, `SELECT ... FOR UPDATE SKIP LOCKED` on PostgreSQL (two workers never wait on, nor take,
the same row) and `BEGIN IMMEDIATE` on SQLite (one writer at a time): it takes the first cell that is open, or
leased by a holder that died, and in the same transaction deletes the run that holder left and creates the
cell's new run. So a cell has one run, and a claim that commits is the only one for that cell.

A lease is alive while its holder beats (`beat`, a few times per timeout) or its run's trainer does (the run's
own heartbeat, every flush). A lease whose heartbeats are both older than `timeout_s`, or whose run stopped
without a result (marked interrupted, as `Store.mark_interrupted` does at once for a dead pid on its own host),
is taken over by the next claim and the cell is rerun. A holder that finds its run ended hands the cell back
(`release`): a result (finished, diverged, failed) makes it done; a cancelled run stops the study's cells (no
worker claims them until the study is resumed: `reopen`); anything else opens it again.

The store knows nothing of grids: a cell's key is the JSON the jobs layer gave it.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, Hashable, Iterator, Mapping, Sequence

from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlalchemy.engine import Connection

from core.store.records import StudyNotFound, dumps_json
from core.store.schema import CellModel, RunModel, StudyModel
from core.store.sqlstore import Store

CELLS = CellModel.__table__
RUNS = RunModel.__table__
STUDIES = StudyModel.__table__
RESULTS = ("finished", "diverged", "failed")  # the outcomes a study keeps (core.jobs.studies.RESULT_STATUSES)
DEFAULT_TIMEOUT_S = 60.0  # the same staleness `Store.mark_interrupted` gives a run on another host


@dataclass(frozen=True)
class CellSpec:
    """A cell as the jobs layer publishes it. `state` "done" with the run that has its result; "open" with
    `run_id` a run to replace (interrupted or cancelled) or None; "leased" with a run still running elsewhere."""

    position: int
    cell: str
    name: str
    config: Mapping[str, Any]
    state: str = "open"
    run_id: int | None = None


@dataclass(frozen=True)
class Claim:
    """A cell this holder now trains: its new run (created by the claim) and the run's config."""

    study_id: int
    position: int
    cell: str
    run_id: int
    name: str
    config: dict[str, Any]
    holder: str
    attempt: int


@dataclass(frozen=True)
class SlotRun:
    """A run a local scheduler is about to create for one of a study's cells: the cell's key (as `take` is told
    to compute it from a config), the run's name and config, and the interrupted or cancelled runs it replaces."""

    key: Hashable
    name: str
    config: Mapping[str, Any]
    replaces: tuple[int, ...] = ()


@contextlib.contextmanager
def write_transaction(store: Store) -> Iterator[Connection]:
    """One transaction that holds SQLite's write lock from its start (`BEGIN IMMEDIATE`), so a read and the write
    that follows it cannot interleave with another writer's; on PostgreSQL a plain transaction (rows are locked
    by `FOR UPDATE`)."""
    with store.engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        yield conn


def _lock_study(conn: Connection, study_id: int) -> None:
    """Hold the study's row until the transaction ends, so that writers of its cells take turns (on PostgreSQL;
    on SQLite `write_transaction` already holds the database's write lock)."""
    conn.execute(select(STUDIES.c.id).where(STUDIES.c.id == study_id).with_for_update())


class Leases:
    """The cells of the store's studies. `timeout_s`: how long a lease lives without a heartbeat."""

    def __init__(self, store: Store, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        if not timeout_s > 0:
            raise ValueError(f"lease timeout must be positive, got {timeout_s!r}")
        self.store = store
        self.timeout_s = float(timeout_s)

    def publish(self, study_id: int, cells: Sequence[CellSpec]) -> int:
        """Write the study's cells that are not in the store yet (by position), mark open ones done (or leased)
        where `cells` says another executor got there, and reopen stopped ones (running a study again resumes
        it). Returns how many cells were added."""
        with write_transaction(self.store) as conn:
            # Publishers of one study take turns: two that both found no cells would both insert them.
            _lock_study(conn, study_id)
            have = set(conn.execute(select(CELLS.c.position).where(CELLS.c.study_id == study_id)).scalars())
            now = self.store.now()
            rows = [{"study_id": study_id, "position": c.position, "cell": c.cell, "name": c.name[:255],
                     "config_json": json.dumps(dict(c.config), allow_nan=True), "state": c.state,
                     "run_id": c.run_id, "holder": None, "heartbeat_at": None if c.state != "leased" else now,
                     "attempts": 0}
                    for c in cells if c.position not in have]
            if rows:
                conn.execute(insert(CELLS), rows)
            for c in cells:  # a cell another executor finished (or is running) since: not claimable any more
                if c.position in have and c.state in ("done", "leased"):
                    conn.execute(update(CELLS).where(CELLS.c.study_id == study_id, CELLS.c.position == c.position,
                                                     CELLS.c.state.in_(("open", "stopped")))
                                 .values(state=c.state, run_id=c.run_id, holder=None,
                                         heartbeat_at=None if c.state == "done" else now))
            conn.execute(update(CELLS).where(CELLS.c.study_id == study_id, CELLS.c.state == "stopped")
                         .values(state="open"))
        return len(rows)

    def take(self, study_id: int, slots: Sequence[SlotRun], *, key_of: Callable[[Mapping[str, Any]], Hashable],
             holder: str, host: str, pid: int) -> list[int | None]:
        """A local scheduler's claim: create the runs of `slots` that no other process took since the scheduler
        planned them, attached to `pid` on `host`. In one write transaction with the study locked, a slot whose key
        (`key_of` a run's config) already has a run that is running or has a result, other than the runs it
        replaces, is skipped (None); otherwise its replaced runs go, its run is created, and its cell, where the
        study has cells (a worker or Dask shares it), is leased to that run, so no claim takes it. So two
        schedulers, or a scheduler and workers, never train one cell twice. Returns the new run ids (None where
        skipped), in order."""
        holder = holder[:255]
        with write_transaction(self.store) as conn:
            if conn.execute(select(STUDIES.c.id).where(STUDIES.c.id == study_id).with_for_update()).first() is None:
                raise StudyNotFound(study_id)  # deleted since the plan
            now = self.store.now()
            replaced = {i for slot in slots for i in slot.replaces}
            taken = {key_of(json.loads(r.config_json)) for r in conn.execute(
                select(RUNS.c.id, RUNS.c.config_json).where(RUNS.c.study_id == study_id,
                                                            RUNS.c.status.in_(("running", *RESULTS))))
                     if r.id not in replaced}
            cells = {key_of(json.loads(c.config_json)): c.position for c in conn.execute(
                select(CELLS.c.position, CELLS.c.config_json).where(CELLS.c.study_id == study_id))}
            out: list[int | None] = []
            for slot in slots:
                if slot.key in taken:
                    out.append(None)
                    continue
                if slot.replaces:
                    conn.execute(delete(RUNS).where(RUNS.c.id.in_(slot.replaces), RUNS.c.status != "running"))
                run_id = conn.execute(insert(RUNS).values(
                    name=slot.name[:255], status="running", config_json=dumps_json(slot.config),
                    created_at=now, study_id=study_id, host=host, pid=pid)).inserted_primary_key[0]
                if slot.key in cells:
                    conn.execute(update(CELLS).where(CELLS.c.study_id == study_id,
                                                     CELLS.c.position == cells[slot.key])
                                 .values(state="leased", run_id=run_id, holder=holder, heartbeat_at=now))
                taken.add(slot.key)
                out.append(run_id)
        return out

    def hand_back(self, study_id: int, run_ids: Sequence[int]) -> None:
        """`release` of the cells a local scheduler leased to these runs (`take`), once the runs ended: done,
        stopped or open as their statuses say; cells held by others, or none at all, are left alone."""
        if not run_ids:
            return
        with self.store.engine.connect() as conn:
            held = conn.execute(select(CELLS.c.position, CELLS.c.run_id, CELLS.c.holder).where(
                CELLS.c.study_id == study_id, CELLS.c.state == "leased", CELLS.c.run_id.in_(list(run_ids)))).all()
        for row in held:
            self.release(Claim(study_id=study_id, position=row.position, cell="", run_id=row.run_id, name="",
                               config={}, holder=row.holder, attempt=0))

    def reopen(self, study_id: int) -> int:
        """Stopped cells (a cancelled study) become claimable again; returns how many."""
        with self.store.engine.begin() as conn:
            return conn.execute(update(CELLS).where(CELLS.c.study_id == study_id, CELLS.c.state == "stopped")
                                .values(state="open")).rowcount

    def stop(self, study_id: int) -> int:
        """No worker claims the study's open cells any more (cancel); leased ones stop when their runs do."""
        with self.store.engine.begin() as conn:
            return conn.execute(update(CELLS).where(CELLS.c.study_id == study_id, CELLS.c.state == "open")
                                .values(state="stopped")).rowcount

    def _claimable(self, cutoff: datetime) -> Any:
        stale = and_(or_(CELLS.c.heartbeat_at.is_(None), CELLS.c.heartbeat_at < cutoff),
                     or_(RUNS.c.heartbeat_at.is_(None), RUNS.c.heartbeat_at < cutoff))
        return or_(CELLS.c.state == "open",
                   and_(CELLS.c.state == "leased", or_(RUNS.c.id.is_(None), RUNS.c.status != "running", stale)))

    def claim(self, holder: str, *, study_id: int | None = None, host: str | None = None,
              pid: int | None = None) -> Claim | None:
        """Take the first claimable cell (of `study_id`, else of any study), replace the run a dead holder left,
        create the cell's run (status running, with `host` and `pid`) and hold its lease. None: nothing left to
        claim now (cells may still be leased by live holders)."""
        got = self.claim_group(holder, study_id=study_id, host=host, pid=pid)
        return got[0] if got else None

    def claim_group(self, holder: str, *, study_id: int | None = None, max_cells: int = 1,
                    same: Callable[[dict[str, Any]], Hashable] | None = None, host: str | None = None,
                    pid: int | None = None, limit: Callable[[dict[str, Any]], int] | None = None) -> list[Claim]:
        """`claim` of up to `max_cells` cells in one transaction: the first claimable cell, and the next claimable
        cells of its study whose configs `same` maps to what it maps the first one's to (cells that can train
        together; every cell of the study when `same` is None), in grid order, at most `limit` of the first cell's
        config of them where given. Empty: nothing to claim now."""
        holder = holder[:255]
        if max_cells < 1:
            raise ValueError(f"max_cells must be at least 1, got {max_cells!r}")
        while True:
            with write_transaction(self.store) as conn:
                now = self.store.now()
                stmt = (select(CELLS.c.study_id, CELLS.c.position, CELLS.c.cell, CELLS.c.name, CELLS.c.config_json,
                               CELLS.c.run_id, CELLS.c.attempts, RUNS.c.status)
                        .select_from(CELLS.outerjoin(RUNS, RUNS.c.id == CELLS.c.run_id))
                        .where(CELLS.c.state.in_(("open", "leased")),
                               self._claimable(now - timedelta(seconds=self.timeout_s)))
                        .order_by(CELLS.c.study_id, CELLS.c.position))
                if study_id is not None:
                    stmt = stmt.where(CELLS.c.study_id == study_id)
                locked = stmt.with_for_update(skip_locked=True, of=CELLS)
                if max_cells > 1 and (peek := conn.execute(stmt.limit(1)).first()) is not None:
                    # Group claimers of one study take turns: each then sees the cells the one before took, and
                    # takes a whole group of its own.
                    _lock_study(conn, peek.study_id)
                rows = conn.execute(locked.limit(1)).all()
                if rows and max_cells > 1:
                    # The first cell's group, read without locks; then only the cells chosen are locked (skipping
                    # any a single-cell claimer holds), so the study's other cells stay claimable meanwhile.
                    first = rows[0]
                    first_config = json.loads(first.config_json)
                    key = same(first_config) if same is not None else None
                    most = max_cells if limit is None else max(1, min(max_cells, limit(first_config)))
                    pick = [r.position for r in conn.execute(
                        stmt.where(CELLS.c.study_id == first.study_id, CELLS.c.position != first.position)).all()
                        if same is None or same(json.loads(r.config_json)) == key][:most - 1]
                    if pick:
                        rows += conn.execute(locked.where(CELLS.c.study_id == first.study_id,
                                                          CELLS.c.position.in_(pick))).all()
                raced = False
                if rows:
                    # PostgreSQL hands back a row another claimer committed while this statement waited as that
                    # claimer left it, but joined to the run this statement's snapshot saw (it re-checks only the
                    # locked table), so a cell just leased can look claimable. The rows are ours now: read them
                    # again, with a fresh snapshot, and keep those still claimable.
                    fresh = conn.execute(stmt.where(CELLS.c.study_id == rows[0].study_id,
                                                    CELLS.c.position.in_([r.position for r in rows]))).all()
                    raced, rows = len(fresh) < len(rows), fresh
                taken: list[Claim] = []
                settled = False
                for row in rows:
                    where = and_(CELLS.c.study_id == row.study_id, CELLS.c.position == row.position)
                    if row.status in RESULTS:  # its holder stored the result but died before handing the cell back
                        conn.execute(update(CELLS).where(where).values(state="done", holder=None))
                        settled = True
                        continue
                    config = json.loads(row.config_json)
                    if row.run_id is not None:  # what a dead holder (or an interrupted run) left: rerun from scratch
                        conn.execute(delete(RUNS).where(RUNS.c.id == row.run_id))
                    run_id = conn.execute(insert(RUNS).values(
                        name=row.name, status="running", config_json=row.config_json, created_at=now,
                        study_id=row.study_id, host=host, pid=pid)).inserted_primary_key[0]
                    conn.execute(update(CELLS).where(where).values(state="leased", run_id=run_id, holder=holder,
                                                                   heartbeat_at=now, attempts=row.attempts + 1))
                    taken.append(Claim(study_id=row.study_id, position=row.position, cell=row.cell, run_id=run_id,
                                       name=row.name, config=config, holder=holder, attempt=row.attempts + 1))
            if taken or not (settled or raced):
                return taken

    def beat(self, claim: Claim) -> bool:
        """Renew the lease; False when it is no longer this holder's (taken over, or the study was deleted)."""
        with self.store.engine.begin() as conn:
            return conn.execute(update(CELLS).where(*self._held(claim)).values(heartbeat_at=self.store.now())
                                ).rowcount == 1

    def release(self, claim: Claim) -> str | None:
        """Hand the cell back after its run ended (or its holder gave up on it): done, stopped (cancelled: the
        study's open cells stop too) or open. Returns the new state, None when the lease was no longer held."""
        with write_transaction(self.store) as conn:
            status = conn.execute(select(RUNS.c.status).where(RUNS.c.id == claim.run_id)).scalar()
            state = "done" if status in RESULTS else "stopped" if status == "cancelled" else "open"
            if conn.execute(update(CELLS).where(*self._held(claim)).values(state=state)).rowcount != 1:
                return None
            if state == "stopped":
                conn.execute(update(CELLS).where(CELLS.c.study_id == claim.study_id, CELLS.c.state == "open")
                             .values(state="stopped"))
            return state

    @staticmethod
    def _held(claim: Claim) -> tuple[Any, ...]:
        return (CELLS.c.study_id == claim.study_id, CELLS.c.position == claim.position,
                CELLS.c.holder == claim.holder, CELLS.c.state == "leased", CELLS.c.run_id == claim.run_id)

    def counts(self, study_id: int | None = None) -> dict[str, int]:
        """The study's cells (None: every study's) per state (every state, 0 when none), plus "claimable" (open,
        or leased by a holder that died) and "total"."""
        cutoff = self.store.now() - timedelta(seconds=self.timeout_s)
        which = [CELLS.c.study_id == study_id] if study_id is not None else []
        with self.store.engine.connect() as conn:
            found = dict(conn.execute(select(CELLS.c.state, func.count()).where(*which)
                                      .group_by(CELLS.c.state)).all())
            claimable = conn.execute(
                select(func.count()).select_from(CELLS.outerjoin(RUNS, RUNS.c.id == CELLS.c.run_id))
                .where(*which, CELLS.c.state.in_(("open", "leased")), self._claimable(cutoff))).scalar()
        out = {state: int(found.get(state, 0)) for state in ("open", "leased", "done", "stopped")}
        return out | {"claimable": int(claimable or 0), "total": sum(out.values())}

    def cells(self, study_id: int) -> list[dict[str, Any]]:
        """The study's cells in grid order: position, cell, state, run_id, holder, heartbeat_at, attempts."""
        with self.store.engine.connect() as conn:
            rows = conn.execute(select(CELLS.c.position, CELLS.c.cell, CELLS.c.state, CELLS.c.run_id, CELLS.c.holder,
                                       CELLS.c.heartbeat_at, CELLS.c.attempts)
                                .where(CELLS.c.study_id == study_id).order_by(CELLS.c.position)).all()
        return [dict(r._mapping) for r in rows]

    def studies_with_work(self) -> list[int]:
        """Ids of the studies that have cells a worker could claim now, oldest first."""
        cutoff = self.store.now() - timedelta(seconds=self.timeout_s)
        with self.store.engine.connect() as conn:
            return list(conn.execute(
                select(CELLS.c.study_id).select_from(CELLS.outerjoin(RUNS, RUNS.c.id == CELLS.c.run_id))
                .where(CELLS.c.state.in_(("open", "leased")), self._claimable(cutoff))
                .group_by(CELLS.c.study_id).order_by(CELLS.c.study_id)).scalars())
