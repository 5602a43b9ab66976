"""Running a study as populations: the cells that can share a model (`core.training.groups.group_key`) are trained
side by side as one batched model (`core.training.population`), in local worker processes, each run stored
through its own `StoreReporter` exactly as when it trains alone.

`resume_study_populations` is `scheduler.resume_study` with tasks of several cells: the plan is the same (finished,
diverged and failed runs are kept, interrupted and cancelled ones replaced, nothing trained twice), each group of
groupable cells is split into one population per worker (contiguous in the plan's seed-major order, so a study
stopped halfway has every variant), and a cell that groups with no other trains alone with `trainer.train`, as
today. A task's runs are created together, just before a worker takes it, and attached to that worker's process:
if the worker dies, its unfinished runs are interrupted (and rerun by the next resume), its finished ones kept.
Cancelling works as for `resume_study`: every member polls its own run's cancel flag at each flush.
"""

from __future__ import annotations

import socket
from collections import deque
from multiprocessing.connection import wait
from typing import Any, Callable

from core.jobs import scheduler
from core.jobs.population_worker import worker_main
from core.jobs.scheduler import (Finished, Outcome, _cancelled, _get, _request_cancel, check_shareable,
                                 resume_study)
from core.jobs.spec import Slot, StudySpec
from core.jobs.studies import Plan, default_workers, load_spec, plan_study
from core.store import INTERRUPTED_ERROR, RunNotFound, Store
from core.training.groups import MAX_POPULATION
from core.training.groups import tasks as cfg_tasks


def tasks(slots: list[Slot], workers: int, *, max_size: int = MAX_POPULATION) -> list[list[Slot]]:
    """The slots in tasks: each group of groupable slots split into up to `workers` contiguous populations of at
    least MIN_POPULATION members (fewer if the group is small), every other slot alone; in the order of each
    task's first slot."""
    return [[slots[i] for i in part] for part in cfg_tasks([s.cfg for s in slots], workers, max_size=max_size)]


def resume_study_populations(store: Store, study_id: int, *, workers: int | None = None,
                             on_finished: Callable[[Finished], None] | None = None, host: str | None = None,
                             poll_s: float = 0.25, population: bool = True, executor: str = "local",
                             **others: Any) -> Outcome:
    """`scheduler.resume_study`, training groupable cells as populations. The same arguments and outcome; a
    task's runs are reported to `on_finished` when its worker is done with all of them. Without `population`,
    or on another executor than the local one, this is `scheduler.resume_study` itself (which on Dask groups the
    cells each task claims)."""
    if not population or executor != "local":
        if executor != "local":  # the executor groups the cells its tasks claim (`core.jobs.dask_executor`)
            others |= {"executor": executor, "population": population}
        return resume_study(store, study_id, workers=workers, on_finished=on_finished, host=host, poll_s=poll_s,
                            **others)
    check_shareable(store.url)
    host = host or socket.gethostname()
    spec = load_spec(store, study_id)
    plan = plan_study(store, study_id, host=host)
    total = len(plan.todo)
    n = max(1, min(workers or default_workers(), total)) if total else 0
    queue = deque(tasks(plan.todo, n))
    n = min(n, len(queue))
    threads = max(1, default_workers() // max(n, 1))
    pool = [_Worker(store.url, threads) for _ in range(n)]
    ended: list[int] = []
    launched: set[int] = set()
    stopping = False

    def settle(w: _Worker, **how: Any) -> None:
        task, w.task = w.task, None
        answer = w.receive()
        runs = {r.id: r for r in store.get_runs([run_id for run_id, _ in task])}  # one query for the task
        for run_id, _ in task:
            run = runs.get(run_id)
            if run is not None and run.status == "running":  # the worker died or could not store its end
                _settle(store, run_id, answer, w.proc.exitcode, **how)
                runs[run_id] = _get(store, run_id)
        scheduler.hand_back(store, study_id, [run_id for run_id, _ in task])
        for run_id, slot in task:
            ended.append(run_id)
            run = runs.get(run_id)
            if on_finished is not None and run is not None:
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
                        task = queue.popleft()
                        started = _dispatch(store, study_id, spec, plan, task, w, host)
                        total -= len(task) - len(started)  # slots another process took since the plan
                        launched.update(started)
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
                    for run_id, _ in w.task or ():
                        _request_cancel(store, run_id)
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


def _dispatch(store: Store, study_id: int, spec: StudySpec, plan: Plan, task: list[Slot], worker: _Worker,
              host: str) -> list[int]:
    """Create the task's runs (`scheduler.take_slots`: those no other process took since the plan), hand them to
    `worker`, return their ids (none started when every slot was taken)."""
    run_ids = scheduler.take_slots(store, study_id, spec, plan, task, host=host, pid=worker.proc.pid)
    mine = [(run_id, slot) for run_id, slot in zip(run_ids, task) if run_id is not None]
    if mine:
        worker.start(mine)
    return [run_id for run_id, _ in mine]


def _settle(store: Store, run_id: int, answer: tuple[str, str | None] | None, exitcode: int | None, *,
            status: str = "interrupted", error: str | None = None) -> None:
    """The worker is done with the run's task: make sure the run is stored in a final status."""
    run = _get(store, run_id)
    if run is None or run.status != "running":
        return
    if answer is not None and error is None:
        status, error = "failed", f"the worker could not store the run's end: {answer[1] or 'no error given'}"
    elif error is None:
        error = f"{INTERRUPTED_ERROR} (worker exit code {exitcode})"
    try:
        store.finish_run(run_id, status=status, summary=run.summary, error=error, wall_time_s=run.duration_s)
    except RunNotFound:
        pass


class _Worker(scheduler._Worker):
    """The scheduler's worker process running `population_worker.worker_main`: its task is [(run id, slot)]."""

    def __init__(self, url: str, threads: int) -> None:
        super().__init__(url, threads, target=worker_main, name="lossboard-population-worker")

    def start(self, task: list[tuple[int, Slot]]) -> None:
        self.task = task
        try:
            self.conn.send([(run_id, slot.cfg.to_dict()) for run_id, slot in task])
        except (BrokenPipeError, OSError):
            pass  # it died: the next wait sees its sentinel and settles the runs as interrupted
