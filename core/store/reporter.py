"""`StoreReporter`: the trainer's `Reporter` (core.training.reporting) writing into a `Store`."""

from __future__ import annotations

import contextlib
from typing import Callable, Hashable, Iterator

from sqlalchemy.exc import DBAPIError

from core.store.records import RunNotFound, db_reason
from core.store.sqlstore import Store
from core.training.reporting import MetricBatch, RunInfo, RunResult, StoreUnavailable


@contextlib.contextmanager
def unavailable() -> Iterator[None]:
    """A database error as `StoreUnavailable`, in one line ("the store could not take the run's values: database
    is locked"): the trainer then stops the run as interrupted, which a study reruns."""
    try:
        yield
    except DBAPIError as exc:
        raise StoreUnavailable(f"the store could not take the run's values: {db_reason(exc)[:300]}") from exc


class StoreReporter:
    """The trainer's Reporter, writing into a store. Every call is one commit (a population's flush, one for all
    its members: `on_metrics_many`), so a killed trainer keeps every batch it handed over. A run deleted while
    it trains stops it: `should_stop` turns True and later writes are dropped instead of failing the trainer."""

    def __init__(self, store: Store, run_id: int, *, pid: int | None = None, host: str | None = None) -> None:
        self.store = store
        self.run_id = run_id
        self.pid = pid
        self.host = host
        self.deleted = False

    def on_start(self, info: RunInfo) -> None:
        with unavailable():
            self.store.start_run(self.run_id, device=info.device, dtype=info.dtype, torch_version=info.torch_version,
                                 total_steps=info.total_steps, pid=self.pid, host=self.host)

    def on_metrics(self, batch: MetricBatch, *, step: int) -> None:
        if self.deleted:
            return
        try:
            with unavailable():
                self.store.log_metrics(self.run_id, batch, progress_step=step)
        except RunNotFound:
            self.deleted = True

    def should_stop(self) -> bool:
        if self.deleted:
            return True
        try:
            with unavailable():
                return self.store.is_cancel_requested(self.run_id)
        except RunNotFound:
            self.deleted = True
            return True

    @classmethod
    def on_start_many(cls, reporters: list[StoreReporter], info: RunInfo) -> list[bool]:
        """`on_start` of each, the runs of reporters sharing a store (and process) started in one transaction
        (`Store.start_runs`). Says which it handled: a run that does not exist, or a store whose transaction
        failed, says False, and the caller starts those one by one (`on_start` raises for a missing run)."""
        done = [False] * len(reporters)
        for idx in _grouped(reporters, lambda r: (id(r.store), r.pid, r.host)):
            first = reporters[idx[0]]
            try:
                missing = first.store.start_runs([reporters[i].run_id for i in idx], device=info.device,
                                                 dtype=info.dtype, torch_version=info.torch_version,
                                                 total_steps=info.total_steps, pid=first.pid, host=first.host)
            except Exception:  # noqa: BLE001 - nothing of this transaction is kept: started one by one
                continue
            for i in idx:
                done[i] = reporters[i].run_id not in missing
        return done

    @classmethod
    def on_finish_many(cls, reporters: list[StoreReporter], results: list[RunResult]) -> list[bool]:
        """`on_finish` of each, the ends of reporters sharing a store written in one transaction
        (`Store.finish_runs`). Says which it handled; those of a store whose transaction failed say False."""
        return _per_store(reporters, lambda store, idx: store.finish_runs([
            (reporters[i].run_id, results[i].status, results[i].summary, results[i].error, results[i].wall_time_s)
            for i in idx]))

    @classmethod
    def on_metrics_many(cls, reporters: list[StoreReporter], batches: list[MetricBatch],
                        steps: list[int]) -> list[bool]:
        """`on_metrics` of each, the batches of reporters sharing a store written in one transaction
        (`Store.log_metrics_many`): a population's flush, one commit for every member instead of one each. Says
        which were handled; a store whose transaction failed kept none of them, and its reporters say False (the
        caller hands those their batches one by one)."""
        return _per_store(reporters, lambda store, idx: store.log_metrics_many([
            (reporters[i].run_id, batches[i], steps[i]) for i in idx]))

    @classmethod
    def should_stop_many(cls, reporters: list[StoreReporter]) -> list[bool]:
        """`should_stop` of each, the cancel flags of those sharing a store read in one query: a population's
        members all poll at every flush, and a query each was a round trip each (`train_population` asks this
        way when its reporters offer it)."""
        flags: dict[int, bool | None] = {}
        for idx in _grouped(reporters, lambda r: None if r.deleted else id(r.store)):
            if not reporters[idx[0]].deleted:
                found = reporters[idx[0]].store.cancel_flags(reporters[i].run_id for i in idx)
                flags.update((i, found.get(reporters[i].run_id)) for i in idx)
        out = []
        for i, r in enumerate(reporters):
            flag = flags.get(i)
            if flag is None:  # deleted, now or before
                r.deleted = True
            out.append(True if flag is None else flag)
        return out

    def on_finish(self, result: RunResult) -> None:
        if self.deleted:
            return
        try:
            self.store.finish_run(self.run_id, status=result.status, summary=result.summary, error=result.error,
                                  wall_time_s=result.wall_time_s)
        except RunNotFound:
            self.deleted = True


def _grouped(reporters: list[StoreReporter], key: Callable[[StoreReporter], Hashable]) -> list[list[int]]:
    """The positions of `reporters` grouped by `key`, in first-seen order."""
    groups: dict[Hashable, list[int]] = {}
    for i, r in enumerate(reporters):
        groups.setdefault(key(r), []).append(i)
    return list(groups.values())


def _per_store(reporters: list[StoreReporter], write: Callable[[Store, list[int]], set[int]]) -> list[bool]:
    """`write(store, positions)` for the reporters of each store whose run is not known to be deleted, one
    transaction that returns the runs that do not exist (their reporters are marked deleted); says which
    reporters were handled: a deleted run's reporter drops what it is given, as one at a time it would; those of
    a store whose transaction failed (nothing of it is kept) say False."""
    done = [r.deleted for r in reporters]
    for idx in _grouped(reporters, lambda r: None if r.deleted else id(r.store)):
        if reporters[idx[0]].deleted:
            continue
        try:
            missing = write(reporters[idx[0]].store, idx)
        except Exception:  # noqa: BLE001 - the caller goes through these one by one
            continue
        for i in idx:
            reporters[i].deleted = reporters[i].run_id in missing
            done[i] = True
    return done
