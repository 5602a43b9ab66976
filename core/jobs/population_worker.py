"""A population study's worker process (`core.jobs.populations`): trains the tasks it is sent, each a list of
(run id, config), through the store. Apart from `populations` so that a worker imports only what it needs (the
store and the trainers, not the study planning and its statistics): a worker starts about half a second sooner.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from multiprocessing.connection import Connection
from typing import Any, NoReturn

from core.experiment.config import ExperimentConfig


def worker_main(conn: Connection, url: str, threads: int) -> None:
    """A worker process: trains the tasks it is sent, one at a time, until it is sent None. A task of one run
    trains with `trainer.train`, a bigger one with `population.train_population`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the scheduler handles Ctrl-C, through the store
    import torch  # noqa: PLC0415 - only workers need torch

    from core.experiment.data import load_dataset  # noqa: PLC0415
    from core.store import StoreReporter  # noqa: PLC0415
    from core.training.population import train_population  # noqa: PLC0415
    from core.training.trainer import train  # noqa: PLC0415

    torch.set_num_threads(threads)
    warm = False
    store = open_store(url)
    host = socket.gethostname()
    while True:
        try:
            task = conn.recv()
        except EOFError:
            leave(store)
        if task is None:
            leave(store)
        answer: tuple[str, str | None] = ("ok", None)
        try:
            cfgs = [ExperimentConfig.from_dict(config) for _, config in task]
            reporters = [StoreReporter(store, run_id, pid=os.getpid(), host=host) for run_id, _ in task]
            try:
                data = load_dataset(cfgs[0])  # the members of a population share their data
            except Exception as exc:  # noqa: BLE001 - a data set that cannot load is these runs' failure
                for run_id, _ in task:
                    store.finish_run(run_id, status="failed", summary={}, error=f"{type(exc).__name__}: {exc}")
            else:
                if len(task) == 1:
                    if not warm:  # torch.optim's first optimizer imports torch._dynamo (~1-2 s): not in the
                        # run's wall time. Populations never need it (their optimizer is batched_optim's).
                        torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
                        warm = True
                    train(cfgs[0], reporters[0], data=data)
                else:
                    train_population(cfgs, reporters, data=data)
        except Exception as exc:  # noqa: BLE001 - the store could not be written; the scheduler records it
            answer = ("error", f"{type(exc).__name__}: {exc}")
        try:
            conn.send(answer)
        except (BrokenPipeError, OSError):  # the scheduler is gone; the runs are stored all the same
            leave(store)


def open_store(url: str, *, attempts: int = 5, wait_s: float = 0.5) -> Any:
    """A worker's `Store(url)`, tried again a few times: a worker that cannot open the store at its start dies
    with its run's cell (interrupted, rerun by the next resume), so a moment's refusal (a file briefly locked
    while another process checkpoints it) is waited out rather than costing the run."""
    from core.store import Store  # noqa: PLC0415

    for attempt in range(1, attempts + 1):
        try:
            return Store(url)
        except ValueError:
            if attempt == attempts:
                raise
            time.sleep(wait_s * attempt)
    raise AssertionError("unreachable")


def leave(store: Any) -> NoReturn:
    """End a worker process at once. Every run it trained is stored and the scheduler has every answer; what is
    left is the interpreter's teardown, which with torch (and torch._dynamo) loaded takes about a second - a
    second the study's command would wait for."""
    store.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
