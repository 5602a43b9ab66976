"""Running a study on a Dask cluster: the scheduler's address, the study's cells in the store, one task per cell.

The study's cells are published in the store (`core.jobs.cells.publish`), then each Dask task claims one cell
(any cell still open, or one whose holder died) and trains it on its worker (`core.jobs.dask_task.run_cell`).
Tasks never name their cell: the store decides which cell a task gets, so a task Dask runs twice (its worker died
and it was rescheduled), a second scheduler on the same study, or `python -m core worker` processes beside the
cluster, never train a cell twice. This loop keeps as many tasks in flight as there are claimable cells, until
every cell has a result or the study was cancelled; cells leased by live holders elsewhere are waited for, so a
holder that dies is replaced once its lease times out.

Needs `dask[distributed]` (`requirements-scale.txt`); the local executor needs nothing of it.
"""

from __future__ import annotations

import math
import os
import pickle
import time
from typing import Any, Callable

from core.experiment.config import ConfigError
from core.jobs.cells import publish
from core.jobs.executors import check_dask, lease_timeout
from core.jobs.studies import cancel_study
from core.store import Run, RunNotFound, Store
from core.store.leases import Leases
from core.training.groups import MAX_POPULATION, MIN_POPULATION


def run_on_dask(store: Store, study_id: int, *, scheduler: str, timeout_s: float | None = None,
                on_finished: Callable[[Run, int, int], None] | None = None, poll_s: float = 0.5,
                connect_timeout_s: float = 30.0, population: bool = False) -> dict[str, Any]:
    """Train every cell of the study without a result on the Dask cluster at `scheduler`; returns kept, busy
    (leased elsewhere at the start), run_ids (runs this pass trained, in the order they ended), cancelled and
    remaining (cells without a result afterwards). `on_finished(run, done, total)` after each run. Ctrl-C
    cancels the study's running runs and waits for them; a second one stops waiting. With `population`, each
    task claims up to an even share of the cells per worker thread (at least `MIN_POPULATION`) among those that
    can share a model, and trains them as one population."""
    check_dask()
    import cloudpickle  # noqa: PLC0415
    from distributed import Client  # noqa: PLC0415

    from core.jobs import dask_task  # noqa: PLC0415

    # The task travels as bytes that call `run_cell` when unpickled, with `run_cell` itself inside them (by
    # value): the scheduler and the workers unpickle a task graph of `pickle.loads` and bytes, and import
    # nothing of ours until the task runs in the worker (which puts its folder on sys.path first).
    cloudpickle.register_pickle_by_value(dask_task)
    timeout_s = timeout_s or lease_timeout()
    leases = Leases(store, timeout_s=timeout_s)
    start = publish(store, study_id, leases)
    total = start["total"] - start["done"]  # every cell without a result: those leased by a dead process too
    ended: list[int] = []
    stopping = False
    try:
        client = Client(scheduler, timeout=connect_timeout_s, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise ConfigError("scheduler", f"cannot reach the Dask scheduler at {scheduler!r}: {exc}") from None
    cells = 1
    if population:
        threads = sum(_threads(client).values())
        cells = min(MAX_POPULATION, max(MIN_POPULATION, math.ceil(start["claimable"] / max(1, threads))))
    task = cloudpickle.dumps(_Call(dask_task.run_cell, store.url, study_id, timeout_s, cells))
    futures: set[Any] = set()
    placed: dict[Any, str | None] = {}  # a population task's worker
    try:
        while True:
            try:
                left = leases.counts(study_id)
                if not futures and (left["open"] + left["leased"] == 0 or stopping):
                    break  # stopped: a lease of a dead holder is left for the study's next run
                if not stopping and _cancel_requested(store, study_id):
                    stopping = True
                    leases.stop(study_id)
                if placed and not stopping:
                    _resubmit_lost(client, futures, placed)
                if stopping:
                    client.cancel([f for f in futures if f.status == "pending"])
                else:
                    wanted = math.ceil(left["claimable"] / cells) - sum(f.status == "pending" for f in futures)
                    workers = _threads(client) if population and wanted > 0 else {}
                    for _ in range(wanted):
                        # A population is a big task: each goes to the worker with the fewest of ours per thread
                        # (a preference: if that worker goes away, another takes it), not two onto one worker.
                        where = {}
                        if workers:
                            busy = {w: sum(placed.get(f) == w for f in futures) / n for w, n in workers.items()}
                            where = {"workers": [min(busy, key=busy.get)], "allow_other_workers": True}
                        future = client.submit(pickle.loads, task, pure=False,
                                               key=f"lossboard-cell-{study_id}-{os.urandom(6).hex()}", **where)
                        futures.add(future)
                        placed[future] = where.get("workers", [None])[0]
                time.sleep(poll_s)
                done = {f for f in futures if f.done()}
                futures -= done
                for future in done:
                    placed.pop(future, None)
                for future in done:
                    for answer in _answers(future):
                        ended.append(answer["run_id"])
                        run = _get(store, answer["run_id"])
                        if on_finished is not None and run is not None:
                            on_finished(run, len(ended), total)
            except KeyboardInterrupt:
                if stopping:
                    raise
                stopping = True
                leases.stop(study_id)
                cancel_study(store, study_id)
    finally:
        if futures:
            client.cancel(list(futures))
        client.close(timeout=10)
    left = leases.counts(study_id)
    return {"kept": start["done"], "busy": start["leased"], "run_ids": ended, "cancelled": stopping,
            "remaining": left["total"] - left["done"]}


class _Call:
    """Unpickled, calls `fn(*args)`: `pickle.loads(cloudpickle.dumps(_Call(f, x)))` is `f(x)`."""

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self) -> tuple[Any, ...]:
        return self.fn, self.args


def _answers(future: Any) -> list[dict[str, Any]]:
    """A task's cells; none when it claimed nothing, or failed or was cancelled (its cells' leases then time
    out, or were handed back, and other tasks take them)."""
    if future.status != "finished":
        return []
    try:
        return list(future.result(timeout=10) or [])
    except Exception:  # noqa: BLE001 - a task that died is the lease's business, not this loop's
        return []


def _resubmit_lost(client: Any, futures: set[Any], placed: dict[Any, str | None]) -> None:
    """Drop the unfinished population tasks placed on a worker that has left the cluster, so that the loop sends
    them again where workers are now. A task that preferred a worker the scheduler no longer has waits for a worker
    to take it; when every worker left at once (the only one killed, all of a machine's), the workers that join
    later never do, and the study would wait forever. Its cells were leased by a task that no longer runs: a
    lease of a dead process is taken over (at once on its machine, else after the lease timeout)."""
    alive = set(_threads(client))
    lost = [f for f in futures if placed.get(f) is not None and placed[f] not in alive and not f.done()]
    if lost:  # ... unless another worker took it up (it may, when it is free): that one is running
        running = {key for keys in client.processing().values() for key in keys}
        lost = [f for f in lost if f.key not in running]
    if lost:
        client.cancel(lost)
        futures.difference_update(lost)
        for future in lost:
            placed.pop(future, None)


def _threads(client: Any) -> dict[str, int]:
    """The cluster's workers (addresses) and their threads."""
    workers = client.scheduler_info().get("workers", {})
    return {address: max(1, int(info.get("nthreads", 1))) for address, info in workers.items()}


def _cancel_requested(store: Store, study_id: int) -> bool:
    """A run of the study is running with the cancel flag set (`core.jobs.studies.cancel_study`)."""
    return bool(store.cancel_requests(study_id, status="running"))


def _get(store: Store, run_id: int) -> Run | None:
    try:
        return store.get_run(run_id)
    except RunNotFound:
        return None
