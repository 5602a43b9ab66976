"""Running a study: local worker processes train its slots, each cell once, stored as they go.

`resume_study` (which is also how a study starts) first marks runs whose process died as interrupted, then keeps
every (variant, seed) that already has a result or a live running run, and trains the rest: those without a run,
and those whose run was interrupted or cancelled. Such a run is deleted (with its partial metrics) just before it
is rerun, so a study never holds two runs of one (variant, seed). Runs are created one at a time, just before a
worker takes them, in seed-major order (every variant's seed 0 first), so a study stopped halfway has every
variant.

Workers are local processes ("spawn"), one per CPU core by default, each training one run at a time through
`StoreReporter`, so metrics are in the store as they are measured. A worker that dies takes only its own run
with it (recorded as interrupted) and is replaced; a run that fails or diverges is recorded as such. A run is
created only if no other process took its slot since the plan (`take_slots`, one locked transaction), so two
schedulers of one study, or a scheduler and `python -m core worker` processes, share it and never train a slot
twice.
Cancelling (`cancel_study`) sets the cancel flag on the study's runs: the running ones stop at their trainers'
next flush, and the scheduler, seeing the flag on a run it started, starts no more runs.

`executor="dask"` runs the study on a Dask cluster instead (`core.jobs.dask_executor`): each cell is claimed
through the store with a lease, so any number of schedulers and `python -m core worker` processes can share a
study and no cell is trained twice.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Mapping

from sqlalchemy.exc import DBAPIError

from core.experiment.config import ConfigError, ExperimentConfig
from core.jobs.population_worker import leave, open_store
from core.jobs.spec import Slot, StudySpec, expand, run_key, run_name, slot_key
from core.jobs.studies import Plan, default_workers, load_spec, open_study, plan_study
from core.store import INTERRUPTED_ERROR, Run, RunNotFound, Store
from core.store.leases import Leases, SlotRun


@dataclass(frozen=True)
class Finished:
    """One run of this scheduling pass ended: the run as stored, and how far the pass is."""

    run: Run
    slot: Slot
    done: int
    total: int


@dataclass(frozen=True)
class Outcome:
    """What one scheduling pass did."""

    study_id: int
    run_ids: list[int]  # runs trained by this pass, in the order they ended
    kept: int  # slots skipped because they already had a result
    busy: int  # slots skipped because another process was running them
    cancelled: bool  # the pass was cancelled (cancel_study, Ctrl-C, SIGTERM) and started no more runs
    remaining: int  # slots still without a result afterwards (to resume, or running elsewhere)
    elsewhere: int = 0  # ... of which running in another process (another scheduler or worker of the study)


def run_study(store: Store, spec: StudySpec, **kwargs: Any) -> Outcome:
    """Store the study (or find it by name) and run what it still needs; see `resume_study`."""
    return resume_study(store, open_study(store, spec), **kwargs)


def resume_study(store: Store, study_id: int, *, workers: int | None = None,
                 on_finished: Callable[[Finished], None] | None = None, host: str | None = None,
                 poll_s: float = 0.25, executor: str = "local", scheduler: str | None = None,
                 lease_timeout_s: float | None = None, population: bool = False) -> Outcome:
    """Train every slot of the study that has no result yet, `workers` at a time (default one per core), and
    return when all have ended or the study was cancelled. Ctrl-C (KeyboardInterrupt) cancels the running runs
    and waits for them to stop; a second one stops them at once. `executor="dask"`: on the Dask cluster whose
    scheduler is at `scheduler` (`workers` is then the cluster's business), with `population` each task training
    the cells it claims that can share a model as one population (locally that is
    `core.jobs.populations.resume_study_populations`)."""
    check_shareable(store.url)
    if executor == "dask":
        return _resume_on_dask(store, study_id, scheduler=scheduler, on_finished=on_finished,
                               lease_timeout_s=lease_timeout_s, population=population)
    host = host or socket.gethostname()
    spec = load_spec(store, study_id)
    plan = plan_study(store, study_id, host=host)
    queue = deque(plan.todo)
    total = len(queue)
    n = max(1, min(workers or default_workers(), total)) if total else 0
    threads = max(1, default_workers() // max(n, 1))
    pool = [_Worker(store.url, threads) for _ in range(n)]
    ended: list[int] = []
    launched: set[int] = set()  # runs this pass created: a cancel flag on any of them stops the pass
    stopping = False

    def settle(w: _Worker, **how: Any) -> None:
        run_id, slot = w.task
        w.task = None
        _settle(store, run_id, w, **how)
        hand_back(store, study_id, [run_id])
        ended.append(run_id)
        if on_finished is not None:
            run = _get(store, run_id)
            if run is not None:
                on_finished(Finished(run, slot, len(ended), total))

    try:
        while (queue and not stopping) or any(w.task for w in pool):
            try:
                for i, w in enumerate(pool):
                    if stopping or not queue:
                        break
                    if w.task is None:
                        if not w.alive():
                            w.close()
                            w = pool[i] = _Worker(store.url, threads)
                        run_id = _dispatch(store, study_id, spec, plan, queue.popleft(), w, host)
                        if run_id is None:  # another process took it since the plan: not this pass's
                            total -= 1
                        else:
                            launched.add(run_id)
                busy = [w for w in pool if w.task]
                ready = set(wait([w.conn for w in busy] + [w.proc.sentinel for w in busy], timeout=poll_s))
                for w in busy:
                    if w.conn in ready or w.proc.sentinel in ready:
                        settle(w)
                stopping = stopping or _cancelled(store, study_id, launched)
            except KeyboardInterrupt:
                if stopping:
                    raise
                stopping = True
                for w in pool:
                    if w.task:
                        _request_cancel(store, w.task[0])
    except KeyboardInterrupt:  # the second one: stop the workers now
        for w in pool:
            w.kill()
            if w.task:
                settle(w, status="cancelled", error="cancelled: the study was stopped")
    finally:
        for w in pool:
            w.close()
    left = plan_study(store, study_id, host=host)
    return Outcome(study_id=study_id, run_ids=ended, kept=len(plan.kept), busy=len(plan.busy), cancelled=stopping,
                   remaining=len(left.todo) + len(left.busy), elsewhere=len(left.busy))


def _resume_on_dask(store: Store, study_id: int, *, scheduler: str | None,
                    on_finished: Callable[[Finished], None] | None, lease_timeout_s: float | None,
                    population: bool) -> Outcome:
    from core.jobs.dask_executor import run_on_dask
    from core.jobs.executors import executor_options  # noqa: PLC0415 - only dask needs it
    from core.jobs.spec import run_key  # noqa: PLC0415

    _, scheduler = executor_options("dask", scheduler)
    spec = load_spec(store, study_id)

    def ended(run: Run, done: int, total: int) -> None:
        key = run_key(spec, run.config)
        slot = next((s for s in expand(spec) if key == slot_key(s.variant, s.seed)), None)
        if on_finished is not None and slot is not None:
            on_finished(Finished(run, slot, done, total))

    got = run_on_dask(store, study_id, scheduler=scheduler, timeout_s=lease_timeout_s, on_finished=ended,
                      population=population)
    return Outcome(study_id=study_id, run_ids=got["run_ids"], kept=got["kept"], busy=got["busy"],
                   cancelled=got["cancelled"], remaining=got["remaining"])


def take_slots(store: Store, study_id: int, spec: StudySpec, plan: Plan, slots: list[Slot], *, host: str,
               pid: int) -> list[int | None]:
    """Create the runs of `slots`, attached to `pid` on `host` (judged by it from now on), replacing their
    interrupted or cancelled runs, unless another process took a slot since `plan` was made: another scheduler
    of the study, a `python -m core worker` or a Dask task (`Leases.take`). None for a slot taken."""
    def key_of(config: Mapping[str, Any]) -> Any:
        return run_key(spec, config)

    keys = [slot_key(slot.variant, slot.seed) for slot in slots]
    slot_runs = [SlotRun(key=key, name=run_name(spec, slot.variant, slot.seed), config=slot.cfg.to_dict(),
                         replaces=tuple(plan.replace.get(key, ()))) for key, slot in zip(keys, slots)]
    return Leases(store).take(study_id, slot_runs, key_of=key_of, holder=f"scheduler {host}:{os.getpid()}",
                              host=host, pid=pid)


def _dispatch(store: Store, study_id: int, spec: StudySpec, plan: Plan, slot: Slot, worker: _Worker,
              host: str) -> int | None:
    """Create the slot's run (`take_slots`) and hand it to `worker`; return its id, None when another process
    took the slot meanwhile (nothing is started)."""
    (run_id,) = take_slots(store, study_id, spec, plan, [slot], host=host, pid=worker.proc.pid)
    if run_id is not None:
        worker.start(run_id, slot)
    return run_id


def _settle(store: Store, run_id: int, worker: _Worker, *, status: str = "interrupted",
            error: str | None = None) -> None:
    """A worker is done with `run_id` (it answered or died): make sure the run is stored in a final status."""
    answer = worker.receive()
    run = _get(store, run_id)
    if run is None or run.status != "running":
        return
    if answer is not None and error is None:  # the worker answered, but the run's end was not stored
        status, error = "failed", f"the worker could not store the run's end: {answer[1] or 'no error given'}"
    elif error is None:
        error = f"{INTERRUPTED_ERROR} (worker exit code {worker.proc.exitcode})"
    try:
        store.finish_run(run_id, status=status, summary=run.summary, error=error, wall_time_s=run.duration_s)
    except RunNotFound:
        pass


def hand_back(store: Store, study_id: int, run_ids: list[int]) -> None:
    """The cells `take_slots` leased to these ended runs, where the study has cells: done, stopped or open
    again as the runs ended (a worker sharing the study then skips or reruns them). Best effort: a cell left
    leased is settled by the next claim."""
    try:
        Leases(store).hand_back(study_id, run_ids)
    except DBAPIError:
        pass


def _get(store: Store, run_id: int) -> Run | None:
    try:
        return store.get_run(run_id)
    except RunNotFound:
        return None


def _cancelled(store: Store, study_id: int, launched: set[int]) -> bool:
    return bool(launched) and not launched.isdisjoint(store.cancel_requests(study_id))


def _request_cancel(store: Store, run_id: int) -> None:
    try:
        store.request_cancel(run_id)
    except RunNotFound:
        pass


def check_shareable(url: str) -> None:
    from sqlalchemy import make_url  # noqa: PLC0415

    parsed = make_url(url)
    database = parsed.database or ""
    if parsed.get_backend_name() == "sqlite" and (database in ("", ":memory:") or "mode=memory" in url):
        raise ConfigError("db", "a study's worker processes cannot share an in-memory SQLite database; "
                                "use a database file")


class _Worker:
    """One spawned worker process and the pipe to it; `task` is the (run id, slot) it is training."""

    def __init__(self, url: str, threads: int, *, target: Callable[..., None] | None = None,
                 name: str = "lossboard-study-worker") -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=target or worker_main, args=(child, url, threads), daemon=True, name=name)
        self.proc.start()
        child.close()
        self.task: Any = None

    def alive(self) -> bool:
        return self.proc.is_alive()

    def start(self, run_id: int, slot: Slot) -> None:
        self.task = (run_id, slot)
        try:
            self.conn.send((run_id, slot.cfg.to_dict()))
        except (BrokenPipeError, OSError):
            pass  # it died: the next wait sees its sentinel and settles the run as interrupted

    def receive(self) -> tuple[str, str | None] | None:
        """The worker's answer for its task, ("ok", None) or ("error", why the run's end was not stored), or
        None if it died first."""
        try:
            if self.conn.poll():
                return self.conn.recv()
        except (EOFError, OSError):
            pass
        self.proc.join(timeout=0 if self.proc.is_alive() else 5)
        return None

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=5)

    def close(self) -> None:
        try:
            self.conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.proc.join(timeout=10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout=5)
        self.conn.close()


def worker_main(conn: Connection, url: str, threads: int) -> None:
    """A worker process: trains the runs it is sent, one at a time, until it is sent None."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the scheduler handles Ctrl-C, through the store
    import torch  # noqa: PLC0415 - only workers need torch

    from core.experiment.data import load_dataset  # noqa: PLC0415
    from core.store import StoreReporter  # noqa: PLC0415
    from core.training.trainer import train  # noqa: PLC0415

    torch.set_num_threads(threads)
    # The first optimizer a process builds imports torch._dynamo (~2 s): do it now, so that it does not count
    # in the wall time of the worker's first run.
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    store = open_store(url)
    host = socket.gethostname()
    while True:
        try:
            task = conn.recv()
        except EOFError:
            leave(store)
        if task is None:
            leave(store)
        run_id, config = task
        reporter = StoreReporter(store, run_id, pid=os.getpid(), host=host)
        answer: tuple[str, str | None] = ("ok", None)
        try:
            cfg = ExperimentConfig.from_dict(config)
            try:
                data = load_dataset(cfg)
            except Exception as exc:  # noqa: BLE001 - a data set that cannot load is this run's failure
                store.finish_run(run_id, status="failed", summary={}, error=f"{type(exc).__name__}: {exc}")
            else:
                train(cfg, reporter, data=data)
        except Exception as exc:  # noqa: BLE001 - the store could not be written; the scheduler records it
            answer = ("error", f"{type(exc).__name__}: {exc}")
        try:
            conn.send(answer)
        except (BrokenPipeError, OSError):  # the scheduler is gone; the run is stored all the same
            leave(store)
