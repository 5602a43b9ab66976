"""`python -m core worker`: claim cells of studies from a shared store and train them here, until none is left.

No engine is needed: start one on each machine that should help (`--db` naming the shared PostgreSQL, or
`LOSSBOARD_DB`). With `--study NAME` the worker takes that study's cells (and starts or resumes it: its cells are
written to the store if they are not there yet); without it, the cells of every study a scheduler or worker has
started. Each cell is claimed through the store (`core.store.leases`), so workers, Dask tasks and schedulers can
share a study without training a cell twice. One cell at a time (start one worker per core to use them all), or
with `--population N` up to N cells that can share a model, trained side by side as one batched population.
"""

from __future__ import annotations

import socket
from typing import Any, TextIO

from core.cli.study import stored_study
from core.experiment.config import ConfigError
from core.jobs.cells import CellResult, publish, work
from core.jobs.executors import ENV_LEASE_TIMEOUT, lease_timeout
from core.jobs.scheduler import check_shareable
from core.jobs.spec import named_study
from core.jobs.studies import open_study
from core.store import Store
from core.store.leases import Leases
from core.training.groups import MAX_POPULATION


def add_worker_parser(subparsers: Any) -> Any:
    w = subparsers.add_parser(
        "worker", help="claim cells of studies from the shared store and train them until none is left",
        description="Train study cells claimed from the store, one at a time, until no cell is open or held by "
                    "another live worker. Each cell is trained once, however many workers, schedulers and "
                    f"machines share the store. A lease lives ${ENV_LEASE_TIMEOUT} seconds (default 60) "
                    "without a heartbeat; then another worker takes the cell over and reruns it.")
    w.add_argument("--study", default=None, metavar="NAME",
                   help="only this study's cells: a stored study's name or id, or a built-in study (then stored "
                        "and started)")
    w.add_argument("--poll", default=None, metavar="S", help="seconds between looks for work (default 1)")
    w.add_argument("--population", default=None, metavar="N",
                   help="claim up to N cells of a study that can share a model and train them as one batched "
                        "population (default 1: one cell at a time); fewer for wide models, whose parameters' "
                        "copies would take more than 1 GiB")
    return w


def cmd_worker(args: Any, store: Store, out: TextIO, err: TextIO) -> int:
    """Exit code 0 when no cell is left, 1 when some are left without a result (stopped: a cancelled study)."""
    check_shareable(store.url)
    timeout_s = lease_timeout()
    poll_s = _seconds(args.poll) if args.poll is not None else 1.0
    max_cells = _cells(args.population) if args.population is not None else 1
    leases = Leases(store, timeout_s=timeout_s)
    study_id = None
    if args.study is not None:
        found = stored_study(store, args.study)  # a stored study's name or id, or a built-in one
        study_id = found.id if found is not None else open_study(store, named_study(args.study))
        publish(store, study_id, leases)
    host = socket.gethostname()
    err.write(f"worker on {host}: claiming cells of " + (f"study {args.study!r}" if study_id else "every study")
              + f" from {store!r}\n")
    err.flush()

    def line(result: CellResult) -> None:
        err.write(f"run {result.run_id} (study {result.study_id}): {result.status}\n")
        err.flush()

    done = work(store, study_id=study_id, timeout_s=timeout_s, poll_s=poll_s, on_cell=line, host=host,
                max_cells=max_cells)
    left = leases.counts(study_id)
    err.write(f"trained {len(done)} cells; none left to claim" + (f" ({left['stopped']} stopped: resume the study "
              "to run them)" if left["stopped"] else "") + "\n")
    return 1 if left["stopped"] else 0


def _seconds(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if not 0 < number <= 3600:
        raise ConfigError("poll", f"must be a number of seconds above 0 and at most 3600; got {value!r}")
    return number


def _cells(value: Any) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        number = 0
    if not 1 <= number <= MAX_POPULATION:
        raise ConfigError("population", f"must be a whole number of cells from 1 to {MAX_POPULATION}; got {value!r}")
    return number
