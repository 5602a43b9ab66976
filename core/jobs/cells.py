"""A study's cells, claimed from the store and trained by whichever process claims them: a Dask task
(`core.jobs.dask_executor`) or `python -m core worker` (`work`). Each (variant, seed) is trained once: the claim
is the store's (`core.store.leases`).

`publish` writes the study's cells from its grid and its stored runs (a result makes a cell done, a run running
elsewhere leased); `train_claimed` trains one claimed cell in this process while a thread renews its lease, then
hands the cell back; `train_claimed_group` trains several cells that group as one population, the same way. If
the database server goes away mid-run, the trainer is stopped at its next flush (nothing more can be stored), and
the run is marked interrupted with what happened, as soon as the server answers again (within
`record_within_s`); every value stored before stays. If it never answers in that time, the run stays "running"
until its lease (and heartbeat) times out: then the next claim, or `mark_interrupted`, takes it.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable

from sqlalchemy.exc import DBAPIError

from core.experiment.config import ExperimentConfig
from core.jobs.spec import expand, run_name, slot_key
from core.jobs.studies import load_spec, plan_study
from core.store import RunNotFound, Store, StoreReporter, pid_alive
from core.store.leases import DEFAULT_TIMEOUT_S, CellSpec, Claim, Leases
from core.store.records import db_reason
from core.training.groups import group_key, population_limit
from core.training.reporting import MetricBatch, RunInfo, RunResult


def cell_key(variant: dict[str, Any], seed: int) -> str:
    return json.dumps([list(variant.values()), seed], default=list)


def publish(store: Store, study_id: int, leases: Leases) -> dict[str, int]:
    """Write the study's cells (see `Leases.publish`), marking runs whose process died interrupted first; returns
    the cells per state."""
    plan = plan_study(store, study_id)
    spec = load_spec(store, study_id)
    cells = []
    for position, slot in enumerate(expand(spec)):
        key = slot_key(slot.variant, slot.seed)
        state, run_id = "open", None
        if key in plan.kept:
            state, run_id = "done", plan.kept[key].id
        elif key in plan.busy:
            state, run_id = "leased", plan.busy[key].id
        elif plan.replace.get(key):
            *older, run_id = sorted(plan.replace[key])
            for old in older:  # one run per cell: the claim replaces the newest, these go now
                _delete(store, old)
        cells.append(CellSpec(position=position, cell=cell_key(slot.variant, slot.seed),
                              name=run_name(spec, slot.variant, slot.seed), config=slot.cfg.to_dict(), state=state,
                              run_id=run_id))
    leases.publish(study_id, cells)
    return leases.counts(study_id)


def _delete(store: Store, run_id: int) -> None:
    try:
        store.delete_run(run_id)
    except RunNotFound:
        pass


def holder_name(host: str | None = None) -> str:
    """Who holds a lease: host, pid and a random token (a pid is reused; a token never)."""
    return f"{host or socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def lost_server(exc: BaseException) -> bool:
    """Whether a store error means the database cannot be reached (rather than a bad statement)."""
    return isinstance(exc, DBAPIError) and (exc.connection_invalidated or type(exc.orig).__name__ in (
        "OperationalError", "InterfaceError"))


class CellReporter(StoreReporter):
    """`StoreReporter` for a claimed cell: stops the trainer when the lease is lost (another worker took the cell
    over) or the database server went away, and then records what happened instead of failing the trainer."""

    def __init__(self, store: Store, run_id: int, *, pid: int, host: str, lease_lost: threading.Event,
                 record_within_s: float) -> None:
        super().__init__(store, run_id, pid=pid, host=host)
        self.lease_lost = lease_lost
        self.record_within_s = record_within_s
        self.lost: BaseException | None = None
        self.stored_step = 0  # the last step whose flush was committed
        self.lost_step: int | None = None

    def _guard(self, call: Callable[[], Any], step: int | None = None) -> Any:
        try:
            return call()
        except DBAPIError as exc:
            if not lost_server(exc):
                raise
            if self.lost is None:
                self.lost, self.lost_step = exc, step
            return None

    def on_start(self, info: RunInfo) -> None:
        self._guard(lambda: super(CellReporter, self).on_start(info))

    @property
    def cut_off(self) -> bool:
        """The cell is another worker's now, or the database server was lost: nothing more is written."""
        return self.lost is not None or self.lease_lost.is_set()

    def on_metrics(self, batch: MetricBatch, *, step: int) -> None:
        if self.cut_off:
            return
        self._guard(lambda: super(CellReporter, self).on_metrics(batch, step=step), step)
        if self.lost is None:
            self.stored_step = step

    def should_stop(self) -> bool:
        if self.cut_off:
            return True
        return bool(self._guard(lambda: super(CellReporter, self).should_stop()) or self.lost is not None)

    @classmethod
    def on_metrics_many(cls, reporters: list[CellReporter], batches: list[MetricBatch],  # type: ignore[override]
                        steps: list[int]) -> list[bool]:
        """`on_metrics` of each (`StoreReporter.on_metrics_many`). A cell whose lease or server is lost drops its
        rows, as `on_metrics` does; where the store's transaction failed, its cells say False and are sent one by
        one, each `on_metrics` telling a lost server from a bad batch."""
        asking = [i for i, r in enumerate(reporters) if not r.cut_off]
        sent = [True] * len(reporters)
        answers = super().on_metrics_many([reporters[i] for i in asking], [batches[i] for i in asking],
                                          [steps[i] for i in asking])
        for i, done in zip(asking, answers):
            sent[i] = done
            if done:
                reporters[i].stored_step = steps[i]
        return sent

    @classmethod
    def on_finish_many(cls, reporters: list[CellReporter], results: list[RunResult]  # type: ignore[override]
                       ) -> list[bool]:
        """`on_finish` of each (`StoreReporter.on_finish_many`): a cell whose lease is lost writes nothing, as
        `on_finish`; one whose server was lost, or whose store's transaction failed, says False, and its own
        `on_finish` records what happened."""
        asking = [i for i, r in enumerate(reporters) if not r.cut_off]
        done = [r.lease_lost.is_set() for r in reporters]
        answers = super().on_finish_many([reporters[i] for i in asking], [results[i] for i in asking])
        for i, ok in zip(asking, answers):
            done[i] = ok
        return done

    @classmethod
    def should_stop_many(cls, reporters: list[CellReporter]) -> list[bool]:  # type: ignore[override]
        """`should_stop` of each (`StoreReporter.should_stop_many`); a lost server stops every one that asked."""
        asking = [r for r in reporters if not r.cut_off]
        try:
            answers = dict(zip(map(id, asking), super().should_stop_many(asking)))
        except DBAPIError as exc:
            if not lost_server(exc):
                raise
            for r in asking:
                r.lost = exc
            answers = {}
        return [answers.get(id(r), True) for r in reporters]

    def on_finish(self, result: RunResult) -> None:
        if self.lease_lost.is_set():  # the cell is another worker's now; this run is not the cell's any more
            return
        if self.lost is None:
            self._guard(lambda: super(CellReporter, self).on_finish(result))
        if self.lost is not None:
            self._record_lost(result)

    def _record_lost(self, result: RunResult) -> None:
        orig = getattr(self.lost, "orig", self.lost)
        error = (f"lost the connection to the database server at step {self.lost_step or self.stored_step} "
                 f"({type(orig).__name__}: {db_reason(orig)}); every value stored before (through step "
                 f"{self.stored_step}) is kept; running the study again reruns this cell")
        deadline = time.monotonic() + self.record_within_s
        while True:
            try:
                self.store.finish_run(self.run_id, status="interrupted", summary=result.summary, error=error,
                                      wall_time_s=result.wall_time_s)
                return
            except RunNotFound:
                return
            except DBAPIError:
                if time.monotonic() >= deadline:
                    return  # still unreachable: the lease times out and the next claim takes the cell
                time.sleep(0.5)


class _Heartbeat(threading.Thread):
    """Renews the leases of cells trained together every `every_s` while they train; sets a cell's `lost` when its
    lease is not ours any more."""

    def __init__(self, leases: Leases, claims: list[Claim], every_s: float) -> None:
        super().__init__(daemon=True, name="lossboard-lease-heartbeat")
        self.leases, self.claims, self.every_s = leases, claims, every_s
        self.lost = [threading.Event() for _ in claims]
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.every_s):
            for claim, lost in zip(self.claims, self.lost):
                if lost.is_set():
                    continue
                try:
                    if not self.leases.beat(claim):
                        lost.set()
                except DBAPIError:  # the server is away: the trainer's reporter sees it too
                    continue
            if all(lost.is_set() for lost in self.lost):
                return


@dataclass(frozen=True)
class CellResult:
    """What training one claimed cell did: its run, the run's status, and the cell's state afterwards."""

    study_id: int
    run_id: int
    status: str | None
    state: str | None
    host: str


def train_claimed(store: Store, leases: Leases, claim: Claim, *, host: str,
                  record_within_s: float | None = None) -> CellResult:
    """Train the claimed cell here, its lease renewed a few times per timeout, then hand the cell back."""
    return train_claimed_group(store, leases, [claim], host=host, record_within_s=record_within_s)[0]


def train_claimed_group(store: Store, leases: Leases, claims: list[Claim], *, host: str,
                        record_within_s: float | None = None) -> list[CellResult]:
    """Train the claimed cells here, one alone with `trainer.train`, several (cells that group: `claim_group`
    with `group_key`) side by side as one population, their leases renewed a few times per timeout, then hand
    each cell back. A cell whose lease is lost (taken over) stops alone; the others go on."""
    from core.experiment.data import load_dataset  # noqa: PLC0415 - torch only where cells are trained
    from core.training.population import train_population  # noqa: PLC0415
    from core.training.trainer import train  # noqa: PLC0415

    beat = _Heartbeat(leases, claims, every_s=max(0.05, leases.timeout_s / 4))
    beat.start()
    within_s = leases.timeout_s if record_within_s is None else record_within_s
    reporters = [CellReporter(store, claim.run_id, pid=os.getpid(), host=host, lease_lost=lost,
                              record_within_s=within_s) for claim, lost in zip(claims, beat.lost)]
    try:
        cfgs = [ExperimentConfig.from_dict(claim.config) for claim in claims]
        try:
            data = load_dataset(cfgs[0])  # the cells of a group share their data
        except Exception as exc:  # noqa: BLE001 - a data set that cannot load is these runs' failure
            for reporter in reporters:
                reporter.on_finish(RunResult(status="failed", error=f"{type(exc).__name__}: {exc}",
                                             wall_time_s=0.0, summary={}))
        else:
            if len(claims) == 1:
                train(cfgs[0], reporters[0], data=data)
            else:
                train_population(cfgs, reporters, data=data)
    finally:
        beat.done.set()
        beat.join()
    results = []
    for claim, lost in zip(claims, beat.lost):
        state = None
        if not lost.is_set():
            state = _retry(lambda c=claim: leases.release(c), within_s=within_s)
        status = _retry(lambda c=claim: store.get_run(c.run_id).status, within_s=1.0)
        results.append(CellResult(claim.study_id, claim.run_id, status, state, host))
    return results


def _retry(call: Callable[[], Any], *, within_s: float) -> Any:
    deadline = time.monotonic() + within_s
    while True:
        try:
            return call()
        except RunNotFound:
            return None
        except DBAPIError:
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.5)


def claim_and_train(store: Store, *, study_id: int | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
                    host: str | None = None, max_cells: int = 1) -> list[CellResult]:
    """Claim a cell (of `study_id`, else of any study) and train it; with `max_cells` above 1, up to that many
    cells of one study that can train together (`core.training.groups.group_key`), as one population. Empty when
    none could be claimed. Runs of this host whose process died are marked interrupted first, so their cells are
    claimable at once."""
    host = host or socket.gethostname()
    leases = Leases(store, timeout_s=timeout_s)
    store.mark_interrupted(host=host, pid_alive=pid_alive, stale_after_s=timeout_s)
    claims = leases.claim_group(holder_name(host), study_id=study_id, max_cells=max_cells, host=host,
                                pid=os.getpid(), same=_group_of if max_cells > 1 else None,
                                limit=_limit_of if max_cells > 1 else None)
    if not claims:
        return []
    return train_claimed_group(store, leases, claims, host=host)


def _group_of(config: dict[str, Any]) -> Any:
    return group_key(ExperimentConfig.from_dict(config))


def _limit_of(config: dict[str, Any]) -> int:
    return population_limit(ExperimentConfig.from_dict(config))


def work(store: Store, *, study_id: int | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
         poll_s: float = 1.0, on_cell: Callable[[CellResult], None] | None = None,
         host: str | None = None, max_cells: int = 1) -> list[CellResult]:
    """Claim and train cells until no cell (of the study, or of any study) is open or leased: cells that live
    holders elsewhere train are waited for, so one whose holder dies is taken over after its timeout. With
    `max_cells` above 1, each claim takes up to that many cells that group, trained as one population."""
    import torch  # noqa: PLC0415 - the first optimizer imports torch._dynamo (~2 s): not in a run's wall time

    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    leases = Leases(store, timeout_s=timeout_s)
    done: list[CellResult] = []
    while True:
        results = claim_and_train(store, study_id=study_id, timeout_s=timeout_s, host=host, max_cells=max_cells)
        for result in results:
            done.append(result)
            if on_cell is not None:
                on_cell(result)
        if results:
            continue
        left = leases.counts(study_id)
        if left["open"] + left["leased"] == 0:
            return done
        time.sleep(poll_s)
